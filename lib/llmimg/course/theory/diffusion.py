"""The DDPM forward process, its posterior and the ELBO weights, in closed form.

Conventions follow ``diffusers.DDPMScheduler``: timesteps are 0-indexed, t = 0 .. T-1,
β_t = linspace(β_start, β_end, T)[t], α_t = 1 - β_t and ᾱ_t = Π_{s ≤ t} α_s
(``scheduler.alphas_cumprod[t]``), with ᾱ_{-1} = 1.

* forward marginal  q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I);
* posterior         q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I), β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t);
* ε-parametrised reverse mean μ_θ = (x_t - β_t / √(1 - ᾱ_t) · ε_θ) / √α_t;
* ELBO term KL(q(x_{t-1} | x_t, x_0) ‖ N(μ_θ, σ_t² I)) = w_t ‖ε - ε_θ‖² + const, with
  w_t = β_t² / (2 σ_t² α_t (1 - ᾱ_t)) (the constant is 0 when σ_t² = β̃_t).
"""

from __future__ import annotations

import numpy as np


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The linear β schedule (DDPM's and ``DDPMScheduler``'s default), in float64."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def alpha_bars(betas: np.ndarray) -> np.ndarray:
    """ᾱ_t = Π_{s ≤ t} (1 - β_s) for every t."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def q_sample(x0: np.ndarray, t: int | np.ndarray, noise: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Jump straight to x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (``t`` broadcasts over the leading axis)."""
    ab = alpha_bars(betas)[np.asarray(t)]
    ab = np.reshape(ab, np.shape(ab) + (1,) * (np.ndim(x0) - np.ndim(ab)))
    return np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise


def forward_chain(
    x0: np.ndarray, betas: np.ndarray, rng: np.random.Generator, record: np.ndarray | list[int]
) -> dict[int, np.ndarray]:
    """Run the Markov chain x_t = √(1-β_t) x_{t-1} + √β_t ε step by step from x_0.

    ``x0`` has shape (n, dim); x_t after step t (0-indexed, so x_0 ↦ "x_t" after
    applying β_0 .. β_t) is stored for every t in ``record``.
    """
    record = set(int(t) for t in record)
    x = np.array(x0, dtype=np.float64)
    out: dict[int, np.ndarray] = {}
    for t in range(max(record) + 1):
        x = np.sqrt(1.0 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(x.shape)
        if t in record:
            out[t] = x.copy()
    return out


def posterior(x0: np.ndarray, xt: np.ndarray, t: int, betas: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean μ̃_t(x_t, x_0) and variance β̃_t of q(x_{t-1} | x_t, x_0), for t ≥ 1."""
    if t < 1:
        raise ValueError("the posterior q(x_{t-1} | x_t, x_0) needs t >= 1 (0-indexed)")
    ab = alpha_bars(betas)
    beta, ab_t, ab_prev = betas[t], ab[t], ab[t - 1]
    coef0 = np.sqrt(ab_prev) * beta / (1.0 - ab_t)
    coeft = np.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)
    return coef0 * x0 + coeft * xt, float(beta * (1.0 - ab_prev) / (1.0 - ab_t))


def eps_mean(xt: np.ndarray, eps: np.ndarray, t: int, betas: np.ndarray) -> np.ndarray:
    """Reverse-step mean from a noise prediction: (x_t - β_t / √(1-ᾱ_t) ε) / √α_t."""
    ab_t = alpha_bars(betas)[t]
    return (xt - betas[t] / np.sqrt(1.0 - ab_t) * eps) / np.sqrt(1.0 - betas[t])


def reverse_variance(t: int | np.ndarray, betas: np.ndarray, kind: str = "posterior") -> np.ndarray:
    """σ_t² of the reverse step: ``"posterior"`` (β̃_t, diffusers' fixed_small) or ``"beta"`` (β_t)."""
    t = np.asarray(t)
    ab = alpha_bars(betas)
    if kind == "beta":
        return np.asarray(betas)[t]
    if kind == "posterior":
        ab_prev = np.where(t >= 1, ab[np.maximum(t - 1, 0)], 1.0)
        return np.asarray(betas)[t] * (1.0 - ab_prev) / (1.0 - ab[t])
    raise ValueError(f"unknown variance kind {kind!r}; use 'posterior' or 'beta'")


def elbo_weight(t: int | np.ndarray, betas: np.ndarray, kind: str = "posterior") -> np.ndarray:
    """w_t = β_t² / (2 σ_t² α_t (1 - ᾱ_t)): the ELBO's weight on ‖ε - ε_θ‖² at step t ≥ 1."""
    t = np.asarray(t)
    betas = np.asarray(betas, dtype=np.float64)
    ab = alpha_bars(betas)
    return betas[t] ** 2 / (2.0 * reverse_variance(t, betas, kind) * (1.0 - betas[t]) * (1.0 - ab[t]))


def gaussian_kl(mu_q: np.ndarray, var_q: float, mu_p: np.ndarray, var_p: float) -> np.ndarray:
    """KL(N(μ_q, var_q I) ‖ N(μ_p, var_p I)) over the last axis, in nats."""
    mu_q = np.asarray(mu_q, dtype=np.float64)
    dim = mu_q.shape[-1]
    sq = ((mu_q - np.asarray(mu_p)) ** 2).sum(-1)
    return 0.5 * (dim * (var_q / var_p - 1.0 - np.log(var_q / var_p)) + sq / var_p)
