"""Reinforcement learning from the GenEval-shaped world's pipeline (llmimg.research.joint.rl and .policy)."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmimg.core.training import fit
from llmimg.research.joint import coupled, experiment, policy, rl


# -- the policy gradient's pieces, against diffusers and torch.distributions ------------------
@pytest.fixture(scope="module")
def ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                         clip_sample=True, timestep_spacing="trailing")


def test_a_stochastic_ddim_step_is_diffusers_step(ddim):
    """mean + σ z is what DDIMScheduler.step(eta=1) draws with the same noise z, step by step along a chain."""
    steps = policy.ddim_steps(ddim, 6, eta=1.0)
    ddim.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    for step, t in zip(steps, ddim.timesteps):
        x0 = 1.5 * torch.randn(x.shape, generator=g)  # outside [-1, 1] too: both clip it
        z = torch.randn(x.shape, generator=g)
        ours = policy.step_mean(step, x, x0) + step.sigma * z
        theirs = ddim.step(x0, t, x, eta=1.0, use_clipped_model_output=True, variance_noise=z).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)  # diffusers works in float32, we in float64
        x = theirs
    assert all(s.sigma > 0 for s in steps)  # trailing spacing ends at t = 0, not at ᾱ = 1: every step is stochastic
    assert policy.ddim_steps(ddim, 6, eta=0.5)[0].sigma == pytest.approx(steps[0].sigma / 2)


def test_the_likelihood_and_the_kl_are_the_gaussians():
    mean, ref, x = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    normal = torch.distributions.Normal(mean, 0.3)
    torch.testing.assert_close(policy.log_prob(x, mean, 0.3), normal.log_prob(x).flatten(1).mean(1))
    kl = torch.distributions.kl_divergence(normal, torch.distributions.Normal(ref, 0.3)).flatten(1).mean(1)
    torch.testing.assert_close(policy.gaussian_kl(mean, ref, 0.3), kl)
    with pytest.raises(ValueError, match="no likelihood"):
        policy.log_prob(x, mean, 0.0)
    with pytest.raises(ValueError, match="eta"):
        policy.ddim_steps(None, 4, eta=0.0)


def test_group_advantages_are_relative_to_the_group():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    a = policy.group_advantages(r, 4)
    assert torch.allclose(a[4:], torch.zeros(4))  # a group that agrees teaches nothing
    assert abs(float(a[:4].sum())) < 1e-6 and a[1] < 0 < a[0]
    with pytest.raises(ValueError, match="groups"):
        policy.group_advantages(r, 3)


def test_the_losses_have_the_policy_gradients():
    """∂L/∂log π = −A/B for the policy loss; the KL loss's gradient is (log q − log q_ref)/B times ∂log q."""
    adv, logp = torch.tensor([1.0, -1.0, 0.5]), torch.zeros(3, requires_grad=True)
    policy.policy_loss(adv, logp).backward()
    torch.testing.assert_close(logp.grad, -adv / 3)
    nll, ref = torch.tensor([2.0, 3.0], requires_grad=True), torch.tensor([2.5, 2.0])
    policy.sequence_kl_loss(nll, ref).backward()
    torch.testing.assert_close(nll.grad, -(ref - nll.detach()) / 2)


# -- the regimes, on the smoke profile's GenEval-shaped pipeline --------------------------------
@pytest.fixture(scope="module")
def stages(smoke_cache):
    torch.set_num_threads(1)
    return rl.start("smoke", progress=False)


def _brightness(images, prompts, descriptions):
    """A reward the smoke models can learn in a few steps: bright images and short descriptions."""
    return images.mean((1, 2, 3)) - torch.tensor([len(d.split()) / 100 for d in descriptions])


def _tiny(regime: str, steps: int = 12, **changes) -> rl.RLConfig:
    config = rl.default_config("smoke", regime, **{"llm_lr_factor": 1.0, **changes})  # both models at lr
    return replace(config, train=replace(config.train, steps=steps, lr=3e-3, warmup_steps=0))


@pytest.mark.parametrize("regime", rl.REGIMES)
def test_gradients_reach_exactly_what_each_regime_trains(regime, stages, monkeypatch):
    monkeypatch.setattr(rl, "rewards", _brightness)
    config = rl.default_config("smoke", regime)
    model = rl.PipelinePolicy(config, *stages).train()
    model(rl.RLData(config, *stages).batch(0)).backward()

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert (reached(model.unet), reached(model.lm)) == {"separate": (True, True), "generator_rl": (True, False),
                                                        "rewriter_rl": (False, True), "joint_rl": (True, True),
                                                        "joint": (True, True), "cycle": (True, True)}[regime]
    assert not reached(model.ref_unet) and not reached(model.ref_lm)


@pytest.mark.parametrize("regime", rl.REGIMES)
def test_each_regimes_objective_improves_on_a_tiny_run(regime, stages, monkeypatch):
    """The RL regimes raise a learnable reward; the supervised ones lower their loss on a batch seen again and again."""
    monkeypatch.setattr(rl, "rewards", _brightness)
    supervised = regime in rl.SUPERVISED
    config = _tiny(regime, steps=25 if supervised else 12, kl_generator=0.0, kl_llm=0.0)
    data = rl.RLData(config, *stages)
    first = data.batch(0)
    batch = (lambda step: first) if supervised else data.batch
    result = fit(rl.PipelinePolicy(config, *stages), batch, lambda m, b: m(b), config.train, progress=False,
                 log=rl.log_parts)
    values = [h["loss" if supervised else "reward"] for h in result.history]
    early, late = sum(values[:4]) / 4, sum(values[-4:]) / 4
    assert (late < 0.8 * early) if supervised else (late > early), values


def test_phrase_index_maps_reading_order_to_the_prompts_order():
    bos, eos, joiner = 1, 2, 9
    source = [bos, 5, 6, joiner, 7, 8, eos, 0]  # "big red and small blue", padded
    target = [bos, 7, 8, joiner, 5, 6, eos, 0, 0]  # the other order
    index = coupled.phrase_index(source, target, joiner)
    assert [source[i] for i in index] == target[:len(index)] and index[3] == 3
    assert coupled.phrase_index(source, [bos, 7, 6, joiner, 5, 8, eos], joiner) is None  # other objects
    assert coupled.phrase_index(source, [bos, 5, 6, eos], joiner) is None  # one object fewer
    assert coupled.phrase_index([bos, joiner, 5, eos], [bos, 5, joiner, eos], joiner) is None  # an empty phrase


def test_straight_through_is_one_hot_with_the_softmax_gradient():
    ids = torch.tensor([[1, 4, 2, 0]])
    mask = (ids != 0).long()
    logits = torch.randn(1, 3, 6, requires_grad=True)
    rows = coupled.straight_through(ids, logits, mask, gain=3.0)
    assert torch.equal(rows, torch.nn.functional.one_hot(ids, 6).float())
    weights = torch.randn(1, 4, 6)
    (rows * weights).sum().backward()
    expected = torch.autograd.grad((3.0 * logits.softmax(-1) * weights[:, 1:] * mask[:, 1:, None]).sum(), logits)[0]
    torch.testing.assert_close(logits.grad, expected)
    assert torch.equal(logits.grad[0, 2], torch.zeros(6))  # the padding's row predicts nothing


@pytest.mark.parametrize("regime", ["joint", "cycle"])
def test_the_coupled_regimes_read_the_same_states_and_pass_the_generators_gradient_to_the_llm(regime, stages):
    """The generator reads exactly what it was trained on; its diffusion loss alone reaches the LLM."""
    from llmimg.stages import generator as gen_stage

    llm, generator = stages
    config = rl.default_config("smoke", regime)
    model = rl.PipelinePolicy(config, llm, generator).train()
    b = rl.RLData(config, llm, generator).batch(0)
    logits = model.lm.token_logits(b["z"], b["task"], b["input_ids"], b["attention_mask"], b["context"])
    states, mask, n_coupled = coupled.generator_inputs(model, b, logits)
    expected, expected_mask = generator.text_encoder.token_states(b["texts"])
    torch.testing.assert_close(states, expected[:, :states.shape[1]])
    assert torch.equal(mask, expected_mask[:, :mask.shape[1]]) and n_coupled > 0
    noisy = generator.scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
    pred = gen_stage.unet_output(model.unet, noisy, b["timesteps"], states, mask)
    gen_stage.diffusion_loss(generator.config, generator.scheduler, pred, b).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lm.parameters())


def test_the_rl_step_by_hand_is_the_librarys(stages, monkeypatch):
    """The generator's loss written with diffusers' DDIM step and torch's Normal equals PipelinePolicy's."""
    from diffusers import DDIMScheduler
    from llmimg.stages import generator as gen_stage

    monkeypatch.setattr(rl, "rewards", _brightness)
    config = rl.default_config("smoke", "generator_rl", trained_steps=2, kl_generator=0.0)
    model = rl.PipelinePolicy(config, *stages).train()
    b = rl.RLData(config, *stages).batch(0)
    roll = model.rollout(b["prompts"], b["seed"])
    library, _ = model.generator_loss(roll, b["seed"])
    generator = stages[1]
    sched = DDIMScheduler.from_config(generator.scheduler.config)
    sched.set_timesteps(config.sampling_steps)
    chosen = [i for i, s in enumerate(model.steps) if s.sigma > 0]
    chosen = [chosen[i] for i in torch.randperm(len(chosen), generator=_gen(b["seed"]))[:2].tolist()]
    uncond = generator.text_states([""], False)
    by_hand = 0.0
    for i in chosen:
        t, x = sched.timesteps[i], roll.chain[i]
        out = gen_stage.guided_output(model.unet, x, t, *roll.states, uncond, generator.config.guidance_scale)
        mean = sched.step(out, t, x, eta=1.0, use_clipped_model_output=True,
                          variance_noise=torch.zeros_like(x)).prev_sample
        logp = torch.distributions.Normal(mean, model.steps[i].sigma).log_prob(roll.chain[i + 1]).flatten(1).mean(1)
        by_hand = by_hand - (roll.advantages * logp).mean() / len(chosen)
    torch.testing.assert_close(library, by_hand, atol=1e-5, rtol=1e-4)


def _gen(seed):
    from llmimg.core import seeding

    return seeding.torch_generator(seed, "reward")


def test_a_rollout_is_a_function_of_the_seed(stages):
    config = rl.default_config("smoke", "joint_rl")
    model = rl.PipelinePolicy(config, *stages)
    prompts = rl.RLData(config, *stages).batch(0)["prompts"]
    a, b = model.rollout(prompts, 5), model.rollout(prompts, 5)
    assert a.written == b.written and torch.equal(a.images, b.images)
    assert len(a.chain) == config.sampling_steps + 1 and a.rewards.shape == (len(prompts),)


@pytest.mark.parametrize("changes, message", [
    ({"regime": "reward"}, "unknown regime"), ({"group_size": 1}, "group_size"),
    ({"regime": "joint"}, "coupling"), ({"regime": "cycle", "coupling": 1.0}, "cycle_weight"),
    ({"coupling": 1.0}, "coupling"),
    ({"trained_steps": 10}, "trained_steps"),
    ({"kl_llm": -1.0}, "kl_llm"), ({"eta": 0.0}, None)])
def test_bad_settings_get_clear_errors(changes, message, stages):
    if message is None:  # eta is checked where the chain is built
        with pytest.raises(ValueError, match="eta"):
            rl.PipelinePolicy(rl.RLConfig(**changes), *stages)
        return
    with pytest.raises(ValueError, match=message):
        rl.RLConfig(**changes)


def test_a_run_is_cached_scored_and_refused_when_damaged(stages, tmp_path):
    first = rl.run("rewriter_rl", "smoke", seed=0, progress=False)
    again = rl.run("rewriter_rl", "smoke", seed=0, progress=False)
    assert again.path == first.path and again.metrics == first.metrics
    for key in ("val", "heldout", "strict", "cmmd", "faithfulness", "planner_tv"):
        assert key in first.metrics
    assert math.isfinite(first.metrics["cmmd"])
    # The generator was frozen: the run's UNet is the one it started from.
    for a, b in zip(first.image_generator.unet.parameters(), stages[1].unet.parameters()):
        assert torch.equal(a, b)
    d = rl.paired_over_seeds([first.metrics], [rl.start_scores("smoke", progress=False)])
    assert set(d) >= {"difference", "se", "verdict", "detectable"}
    same = rl.paired_over_seeds([first.metrics] * 3, [first.metrics] * 3)  # the same verdict on every image
    assert (same["difference"], same["se"], same["verdict"]) == (0.0, 0.0, "tie")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in first.path.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    (damaged / rl.WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="damaged.*llmimg train joint --world geneval"):
        rl.load(damaged, *stages)


def _two_process_rl_run():
    from accelerate import PartialState

    llm, generator = rl.start("smoke", progress=False)
    result = rl.train(_tiny("joint_rl", steps=3), llm, generator, progress=False)
    assert PartialState().num_processes == 2
    trained = [*result.model.unet.parameters(), *result.model.lm.parameters()]
    weights = torch.cat([p.detach().flatten() for p in trained])
    gathered = [torch.zeros_like(weights) for _ in range(2)]
    torch.distributed.all_gather(gathered, weights)
    assert torch.equal(gathered[0], gathered[1])  # DDP keeps both processes' policies identical


def test_rl_runs_unchanged_on_two_processes(stages):
    """What `accelerate launch --num_processes 2 -m llmimg train joint --world geneval` does, on the CPU (gloo)."""
    code = ("import sys; sys.path.insert(0, 'tests'); from accelerate import debug_launcher; "
            "from test_joint_rl import _two_process_rl_run; debug_launcher(_two_process_rl_run, num_processes=2)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]


# -- the command line ---------------------------------------------------------------------------
def test_the_clis_rl_regimes_are_the_librarys():
    from llmimg.cli.parser import JOINT_RL_REGIMES

    assert JOINT_RL_REGIMES == rl.REGIMES


def test_cli_train_joint_geneval_trains_and_scores_a_regime(stages, capsys):
    from llmimg.cli import main

    assert main(["train", "joint", "--world", "geneval", "--regime", "generator_rl", "--seed", "1", "--profile",
                 "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "generator_rl regime, seed 1 (smoke profile, GenEval-shaped world)" in out
    assert "heldout overall" in out and "stricter judge" in out
    with pytest.raises(SystemExit, match="add --world geneval"):
        main(["train", "joint", "--regime", "joint_rl", "--profile", "smoke"])
    with pytest.raises(SystemExit, match="--world geneval: choose a regime"):
        main(["train", "joint", "--world", "geneval", "--regime", "reward", "--profile", "smoke"])
    with pytest.raises(SystemExit, match="--seed is for"):
        main(["train", "joint", "--regime", "joint", "--seed", "2", "--profile", "smoke"])


def test_cli_eval_joint_geneval_prints_the_whole_record(stages, capsys):
    import json

    from llmimg.cli import main

    assert main(["eval", "joint", "--world", "geneval", "--profile", "smoke", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["summary"]) == set(rl.REGIMES) and out["seeds"] == list(rl.SEEDS)
    for regime in rl.REGIMES:
        assert len(out["runs"][regime]) == len(rl.SEEDS)
        assert {"seed_mean", "vs_start"} <= set(out["summary"][regime]["heldout"])
        assert {"strict", "cmmd", "faithfulness", "planner_tv"} == set(out["summary"][regime]["hacking"])
    assert set(out["verdicts"]) == {f"{a} vs {b}" for a, b in experiment.VERDICTS}
    assert out["coadaptation"]["own_llm_minus_start_llm"]["verdict"] in ("ahead", "behind", "tie")


def test_the_recipe_search_records_each_recipe_against_the_start(stages, tmp_path, monkeypatch):
    from llmimg.research.joint import recipes

    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    name = "rewriter_rl, LLM lr 1e-4"
    out = recipes.run("smoke", [name], progress=False)
    assert set(out["recipes"]) == {name} and recipes.results_path("smoke").is_file()
    assert {"diff", "se"} <= set(out["recipes"][name]["vs_start"]["heldout"])
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.run("smoke", ["bogus"], progress=False)
