"""Tests of llmimg.course.theory: every closed form against an independent computation
(Monte Carlo, autograd, finite differences, torch.distributions, diffusers, open_clip)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmimg.course.theory import contrastive, diffusion, guidance, joint, language, likelihood, pipeline


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These toys are tiny: one thread avoids thread-pool overhead (and contention on CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# ---------------------------------------------------------------- pipeline (section 1)


def test_pipeline_stages_are_distributions_and_llm_is_a_softmax():
    toy = pipeline.pipeline_toy()
    for t in range(len(toy.prompts)):
        z = torch.tensor(toy.encode(t))
        logits = torch.tensor(toy.llm_weights) @ z + torch.tensor(toy.llm_bias)
        np.testing.assert_allclose(toy.description_probs(toy.encode(t)), torch.softmax(logits, 0).numpy(), atol=1e-12)
    np.testing.assert_allclose(toy.image_given_description.sum(1), 1.0)


def test_pipeline_marginal_matches_independent_monte_carlo():
    toy = pipeline.pipeline_toy()
    exact = pipeline.image_given_prompt(toy)
    np.testing.assert_allclose(exact.sum(1), 1.0)
    rng = np.random.default_rng(0)
    n = 40_000
    for t in range(len(toy.prompts)):
        # an independent sampler: one rng.choice per description group
        d = rng.choice(len(toy.descriptions), size=n, p=toy.description_probs(toy.encode(t)))
        images = np.empty(n, dtype=int)
        for k in range(len(toy.descriptions)):
            idx = np.flatnonzero(d == k)
            images[idx] = rng.choice(len(toy.images), size=idx.size, p=toy.image_given_description[k])
        freq = np.bincount(images, minlength=len(toy.images)) / n
        se = np.sqrt(exact[t] * (1 - exact[t]) / n)
        assert np.all(np.abs(freq - exact[t]) < 5 * se + 1e-9)
        # and the library's own sampler agrees with the enumeration too
        freq2 = np.bincount(pipeline.sample_pipeline(toy, t, n, rng), minlength=len(toy.images)) / n
        assert np.all(np.abs(freq2 - exact[t]) < 5 * se + 1e-9)


# ---------------------------------------------------------------- likelihood (section 2)


def test_factorisations_reproduce_the_joint():
    joint = likelihood.example_joint_table()
    f = likelihood.factorise(joint)
    np.testing.assert_allclose(f["p_d"][None, :] * f["p_i_given_d"], joint, atol=1e-15)
    np.testing.assert_allclose(f["p_i"][:, None] * f["p_d_given_i"], joint, atol=1e-15)
    np.testing.assert_allclose(f["p_i_given_d"].sum(0), 1.0)
    np.testing.assert_allclose(f["p_d_given_i"].sum(1), 1.0)


def test_product_of_conditionals_is_not_normalised_and_has_another_maximiser():
    q = likelihood.product_of_conditionals(likelihood.example_joint_table())
    # by hand: (.3/.5)^2 + 2 (.2/.5)(.2/.45) + (.25/.45)^2 + 1
    expected_sum = 0.36 + 2 * 0.4 * 0.2 / 0.45 + (0.25 / 0.45) ** 2 + 1.0
    assert q.sum() == pytest.approx(expected_sum, rel=1e-12)
    assert np.unravel_index(q.argmax(), q.shape) == (2, 2)
    assert np.unravel_index(likelihood.example_joint_table().argmax(), q.shape) == (0, 0)


def test_scale_log_likelihood_matches_torch_normal_and_mle_is_closed_form():
    rng = np.random.default_rng(1)
    x = 2.5 * rng.standard_normal(500)
    sigma = 0.7
    thetas = np.array([-1.3, 0.05, 0.4, 2.0])
    ll = likelihood.scale_log_likelihood(thetas, x, sigma)
    for th, value in zip(thetas, ll):
        scale = torch.tensor(sigma / abs(th), dtype=torch.float64)
        ref = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), scale).log_prob(torch.tensor(x)).mean()
        assert value == pytest.approx(float(ref), rel=1e-10)
    grid = np.linspace(0.01, 1.0, 20_001)
    best = grid[np.argmax(likelihood.scale_log_likelihood(grid, x, sigma))]
    assert likelihood.scale_mle(x, sigma) == pytest.approx(best, abs=1e-4)
    assert likelihood.scale_mle(x, sigma) == pytest.approx(sigma / 2.5, rel=0.1)
    # the unnormalised objective is maximised by the collapsed network theta = 0
    un = likelihood.scale_unnormalised_objective(grid, x, sigma)
    assert np.all(np.diff(un) < 0)


def test_scale_partition_matches_quadrature():
    xs = np.linspace(-200, 200, 400_001)
    for theta in (0.2, 1.0, 3.0):
        numeric = np.trapezoid(np.exp(-0.5 * (theta * xs) ** 2 / 1.5**2), xs)
        assert likelihood.scale_partition(theta, 1.5) == pytest.approx(numeric, rel=1e-8)


# ---------------------------------------------------------------- contrastive (section 3)


def test_gaussian_mutual_information_from_entropies():
    dim, rho = 3, 0.8
    cov = np.block([[np.eye(dim), rho * np.eye(dim)], [rho * np.eye(dim), np.eye(dim)]])
    mi = -0.5 * np.linalg.slogdet(cov)[1]  # H(X) + H(Y) - H(X, Y) for unit marginals
    assert contrastive.gaussian_mutual_information(dim, rho) == pytest.approx(mi, rel=1e-12)


def test_optimal_critic_is_log_density_ratio():
    rng = np.random.default_rng(2)
    dim, rho = 2, 0.6
    x, y = contrastive.sample_correlated_gaussians(5, dim, rho, rng)
    s = contrastive.optimal_critic(x, y, rho)
    xt, yt = torch.tensor(x), torch.tensor(y)
    cond = torch.distributions.Independent(torch.distributions.Normal(rho * xt[:, None, :], math.sqrt(1 - rho**2)), 1)
    marg = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(dim, dtype=torch.float64), 1.0), 1)
    ref = cond.log_prob(yt[None, :, :]) - marg.log_prob(yt)[None, :]
    np.testing.assert_allclose(s, ref.numpy(), atol=1e-10)


def test_infonce_loss_is_cross_entropy():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((4, 7, 7))
    ref = [float(torch.nn.functional.cross_entropy(torch.tensor(s), torch.arange(7))) for s in scores]
    np.testing.assert_allclose(contrastive.infonce_loss(scores), ref, atol=1e-12)


def test_clip_loss_matches_open_clip():
    open_clip = pytest.importorskip("open_clip")
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=-1)
    scale = torch.tensor(14.3)
    ref = open_clip.loss.ClipLoss()(img, txt, scale)
    assert float(contrastive.clip_loss(img, txt, scale)) == pytest.approx(float(ref), rel=1e-6)


def test_infonce_bound_is_below_log_n_and_the_true_mi():
    rng = np.random.default_rng(4)
    # small MI, big batch: the bound is nearly tight
    mi = contrastive.gaussian_mutual_information(1, 0.5)
    est, se = contrastive.infonce_bound(256, 1, 0.5, 40, rng)
    assert abs(est - mi) < 4 * se + 0.02
    # large MI, small batch: capped by log N
    mi = contrastive.gaussian_mutual_information(5, 0.95)
    est, se = contrastive.infonce_bound(16, 5, 0.95, 200, rng)
    assert est <= math.log(16) + 1e-12
    assert est < mi
    assert est > math.log(16) - 0.2


# ---------------------------------------------------------------- language (section 4)


def test_sequence_log_prob_by_hand():
    lm = language.bigram_toy()
    np.testing.assert_allclose(lm.transitions.sum(1), 1.0)
    # <bos>→a 0.8, a→red 0.45, red→circle 0.5, circle→<eos> 0.6
    assert language.sequence_log_prob(lm, ("a", "red", "circle")) == pytest.approx(math.log(0.8 * 0.45 * 0.5 * 0.6))
    assert language.sequence_log_prob(lm, ("red",)) == pytest.approx(math.log(0.1 * 0.1))


def test_sampled_frequencies_match_chain_rule_probabilities():
    lm = language.bigram_toy()
    rng = np.random.default_rng(5)
    n = 20_000
    seqs = language.sample_sequences(lm, n, rng)
    for target in [("a", "red", "circle"), ("a", "blue", "square"), ("red", "circle")]:
        p = math.exp(language.sequence_log_prob(lm, target))
        freq = sum(s == target for s in seqs) / n
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n)
    # expected number of tokens (words + <eos>)
    lengths = np.array([len(s) + 1 for s in seqs])
    assert abs(lengths.mean() - language.expected_tokens(lm)) < 5 * lengths.std() / math.sqrt(n)
    # per-token cross-entropy on samples approaches the exact per-token entropy
    assert language.cross_entropy_per_token(lm, seqs) == pytest.approx(language.entropy_per_token(lm), rel=0.02)


def test_length_distribution_matches_enumeration_and_tends_to_one():
    lm = language.bigram_toy()
    table = language.enumerate_sequences(lm, 4)
    brute = np.zeros(5)
    for seq, p in table.items():
        brute[len(seq)] += p
    np.testing.assert_allclose(language.length_distribution(lm, 4), brute, atol=1e-14)
    assert language.length_distribution(lm, 200).sum() == pytest.approx(1.0, abs=1e-9)


def test_sequence_entropy_matches_enumeration():
    # a model whose sequences are short enough to enumerate almost all the mass
    lm = language.BigramLM(("x", "y"), np.array([[0.6, 0.4, 0.0], [0.2, 0.1, 0.7], [0.1, 0.3, 0.6]]))
    table = language.enumerate_sequences(lm, 14)
    p = np.array([v for v in table.values() if v > 0])
    assert p.sum() > 1 - 1e-6
    assert language.sequence_entropy(lm) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-4)


# ---------------------------------------------------------------- diffusion (sections 5, 6)


@pytest.fixture(scope="module")
def scheduler():
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(clip_sample=False)


def test_schedule_matches_diffusers(scheduler):
    betas = diffusion.linear_betas()
    np.testing.assert_allclose(betas, scheduler.betas.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(diffusion.alpha_bars(betas), scheduler.alphas_cumprod.double().numpy(), rtol=1e-4)


def test_q_sample_matches_add_noise(scheduler):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g)
    noise = torch.randn(6, 3, generator=g)
    t = torch.tensor([0, 10, 200, 500, 800, 999])
    ref = scheduler.add_noise(x0, noise, t).numpy()
    mine = diffusion.q_sample(x0.double().numpy(), t.numpy(), noise.double().numpy(), diffusion.linear_betas())
    np.testing.assert_allclose(mine, ref, atol=2e-5)


def test_forward_chain_moments_match_closed_form():
    rng = np.random.default_rng(6)
    betas = diffusion.linear_betas()
    ab = diffusion.alpha_bars(betas)
    x0 = np.tile([[1.5, -2.0]], (20_000, 1))
    out = diffusion.forward_chain(x0, betas, rng, record=[50, 300, 999])
    for t, xt in out.items():
        se = np.sqrt((1 - ab[t]) / len(xt))
        assert np.all(np.abs(xt.mean(0) - np.sqrt(ab[t]) * x0[0]) < 5 * se)
        assert np.all(np.abs(xt.var(0) / (1 - ab[t]) - 1) < 0.05)


def test_posterior_is_bayes_and_matches_diffusers_step(scheduler):
    betas = diffusion.linear_betas()
    ab = diffusion.alpha_bars(betas)
    rng = np.random.default_rng(7)
    x0, xt = rng.standard_normal((2, 4, 3))
    for t in (1, 17, 400, 999):
        mean, var = diffusion.posterior(x0, xt, t, betas)
        # Bayes for Gaussians: prior N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1}), likelihood N(x_t; √α_t x, β_t)
        prec = 1 / (1 - ab[t - 1]) + (1 - betas[t]) / betas[t]
        ref_mean = (np.sqrt(ab[t - 1]) * x0 / (1 - ab[t - 1]) + np.sqrt(1 - betas[t]) * xt / betas[t]) / prec
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-12)
        assert var == pytest.approx(1 / prec, rel=1e-9)
        # diffusers' step with ε = the true noise: its mean is μ̃ and its variance β̃
        eps = (xt - np.sqrt(ab[t]) * x0) / np.sqrt(1 - ab[t])
        g = torch.Generator().manual_seed(t)
        out = scheduler.step(torch.tensor(eps, dtype=torch.float32), t, torch.tensor(xt, dtype=torch.float32), generator=g).prev_sample
        noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(t))
        np.testing.assert_allclose(out.double().numpy(), mean + np.sqrt(var) * noise.double().numpy(), atol=2e-4)
        np.testing.assert_allclose(diffusion.eps_mean(xt, eps, t, betas), mean, atol=1e-9)


def test_elbo_kl_equals_weighted_noise_error():
    betas = diffusion.linear_betas()
    ab = diffusion.alpha_bars(betas)
    rng = np.random.default_rng(8)
    x0 = rng.standard_normal(5)
    eps, eps_theta = rng.standard_normal((2, 5))
    for t in (1, 10, 250, 999):
        xt = np.sqrt(ab[t]) * x0 + np.sqrt(1 - ab[t]) * eps
        mu_q, var_q = diffusion.posterior(x0, xt, t, betas)
        mu_p = diffusion.eps_mean(xt, eps_theta, t, betas)
        sq = ((eps - eps_theta) ** 2).sum()
        for kind in ("posterior", "beta"):
            var_p = float(diffusion.reverse_variance(t, betas, kind))
            kl = torch.distributions.kl_divergence(
                torch.distributions.Normal(torch.tensor(mu_q), math.sqrt(var_q)),
                torch.distributions.Normal(torch.tensor(mu_p), math.sqrt(var_p)),
            ).sum()
            const = 0.5 * 5 * (var_q / var_p - 1 - math.log(var_q / var_p))
            assert float(kl) == pytest.approx(float(diffusion.elbo_weight(t, betas, kind)) * sq + const, rel=1e-7)
            assert float(diffusion.gaussian_kl(mu_q, var_q, mu_p, var_p)) == pytest.approx(float(kl), rel=1e-9)


# ---------------------------------------------------------------- guidance (section 7)


def test_mixture_log_probs_match_torch_distributions():
    mix = guidance.toy_mixture()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(mix.means, covariance_matrix=mix.covs).log_prob(x[:, None, :])
    torch.testing.assert_close(guidance.component_log_probs(mix, x), ref)
    comp = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(mix.weights),
        torch.distributions.MultivariateNormal(mix.means, covariance_matrix=mix.covs),
    )
    torch.testing.assert_close(guidance.log_prob(mix, x), comp.log_prob(x))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.01])
def test_scores_match_autograd_and_bayes(alpha_bar):
    mix = guidance.toy_mixture().noisy(alpha_bar)
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    (grad_p,) = torch.autograd.grad(guidance.log_prob(mix, x).sum(), x)
    torch.testing.assert_close(guidance.score(mix, x).detach(), grad_p)
    for c in range(3):
        (grad_pc,) = torch.autograd.grad(guidance.component_log_probs(mix, x)[:, c].sum(), x)
        torch.testing.assert_close(guidance.class_score(mix, x, c).detach(), grad_pc)
        (grad_post,) = torch.autograd.grad(guidance.class_log_posterior(mix, x)[:, c].sum(), x)
        torch.testing.assert_close(grad_pc, grad_p + grad_post)


def test_noisy_mixture_matches_monte_carlo():
    mix = guidance.toy_mixture()
    g = torch.Generator().manual_seed(2)
    n = 40_000
    c = 1
    x0 = torch.distributions.MultivariateNormal(mix.means[c], mix.covs[c]).sample((n,))
    ab = 0.3
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    noisy = mix.noisy(ab)
    torch.testing.assert_close(xt.mean(0), noisy.means[c], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(xt.T), noisy.covs[c], atol=0.03, rtol=0)


def test_tilted_grid_stats_known_cases_and_importance_sampling():
    mix = guidance.toy_mixture()
    s0 = guidance.tilted_grid_stats(mix, 1, 0.0, size=201)
    np.testing.assert_allclose(s0["mean"], (mix.weights[:, None] * mix.means).sum(0).numpy(), atol=1e-6)
    s1 = guidance.tilted_grid_stats(mix, 1, 1.0, size=201)
    np.testing.assert_allclose(s1["mean"], mix.means[1].numpy(), atol=1e-6)
    # w = 3 against self-normalised importance sampling from p(x)
    torch.manual_seed(3)
    comp = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(mix.weights),
        torch.distributions.MultivariateNormal(mix.means, covariance_matrix=mix.covs),
    )
    x = comp.sample((200_000,))
    post = guidance.class_log_posterior(mix, x)[:, 1].exp()
    wts = post**3 / (post**3).sum()
    s3 = guidance.tilted_grid_stats(mix, 1, 3.0, size=201)
    np.testing.assert_allclose(s3["mean"], (wts[:, None] * x).sum(0).numpy(), atol=0.02)
    assert s3["class_prob"] == pytest.approx(float((wts * post).sum()), abs=0.005)


def test_guided_sampler_w0_and_w1_reach_the_right_distributions():
    mix = guidance.toy_mixture()
    betas = diffusion.linear_betas(200, 1e-3, 0.1)  # a short schedule keeps the test fast
    g = torch.Generator().manual_seed(4)
    n = 3000
    x1 = guidance.sample_guided(mix, 1, 1.0, betas, n, g)
    se = float(mix.covs[1].diagonal().sqrt().max()) / math.sqrt(n)
    assert torch.all((x1.mean(0) - mix.means[1]).abs() < 5 * se + 0.02)
    x0 = guidance.sample_guided(mix, 1, 0.0, betas, n, g)
    assert torch.all((x0.mean(0) - (mix.weights[:, None] * mix.means).sum(0)).abs() < 0.08)


# ---------------------------------------------------------------- joint (section 8)


def test_marginal_nll_matches_mixture_same_family():
    model = joint.true_joint_toy()
    t, d, images = joint.sample_joint_data(model, 300, torch.Generator().manual_seed(0))
    probs = model.log_p_description(t).exp().detach()
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs),
        torch.distributions.Independent(torch.distributions.Normal(model.means.detach().expand(300, -1, -1), model.sigma), 1),
    )
    assert float(model.marginal_nll(t, images).detach()) == pytest.approx(float(-mixture.log_prob(images).mean()), rel=1e-10)


def test_joint_gradients_reach_both_models_and_match_finite_differences():
    data_model = joint.true_joint_toy()
    t, _, images = joint.sample_joint_data(data_model, 200, torch.Generator().manual_seed(1))
    model = joint.JointToy(2, 4, 2, 0.3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.logits.copy_(torch.randn(2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    model.zero_grad()
    model.marginal_nll(t, images).backward()
    for param in (model.logits, model.means):
        fd = joint.finite_difference_grad(lambda: model.marginal_nll(t, images), param)
        assert param.grad.abs().max() > 1e-3
        torch.testing.assert_close(param.grad, fd, atol=1e-7, rtol=1e-5)


def test_joint_training_reaches_the_true_likelihood():
    data_model = joint.true_joint_toy()
    g = torch.Generator().manual_seed(4)
    t, d, images = joint.sample_joint_data(data_model, 600, g)
    model = joint.JointToy(2, 4, 2, 0.3, generator=torch.Generator().manual_seed(5))
    losses = joint.train_joint(model, t, images, steps=250)
    assert losses[-1] < losses[0]
    true_nll = float(data_model.marginal_nll(t, images).detach())
    assert losses[-1] < true_nll + 0.02
    perm = list(joint.match_descriptions(model.means.detach(), data_model.means.detach()))
    torch.testing.assert_close(model.means.detach()[perm], data_model.means.detach(), atol=0.1, rtol=0)
    sep = joint.fit_separately(t, d, images, 2, 4, 0.3)
    freq = torch.stack([torch.bincount(d[t == k], minlength=4).double() for k in range(2)])
    freq = freq / freq.sum(1, keepdim=True)
    torch.testing.assert_close(sep.log_p_description(torch.arange(2)).exp().detach(), freq, atol=0.01, rtol=0)


def test_match_descriptions_recovers_a_permutation():
    true = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    perm = (2, 0, 3, 1)
    learned = torch.empty_like(true)
    learned[list(perm)] = true + 0.01
    assert joint.match_descriptions(learned, true) == perm
