"""The policy-gradient pieces of the reinforcement-learning regimes: a stochastic denoising step and its likelihood.

**A denoising chain is a policy.** DDIM with ``eta > 0`` (Song et al. 2021) makes each
step a Gaussian, x_{t-1} ~ N(μ_θ(x_t, t), σ_t² I), with

    μ_θ = √ᾱ_{prev} x̂₀ + √(1 − ᾱ_{prev} − σ_t²) ε̂,   σ_t = η √((1 − ᾱ_{prev}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{prev}),

where x̂₀ is the model's clean-image estimate and ε̂ = (x_t − √ᾱ_t x̂₀) / √(1 − ᾱ_t) the
noise it implies. So the image's chain has a likelihood, a product of Gaussians, and
REINFORCE applies to the generator as it does to a language model (DDPO, Black et al.
2023; Flow-GRPO, Liu et al. 2025, does the same for a flow model's SDE sampler). A step
that ends at ᾱ = 1 has σ = 0: it is deterministic, has no likelihood and is not trained
(with the generator's "trailing" spacing the chain ends at t = 0, so every step is stochastic).

**Group-relative advantages** (GRPO, Shao et al. 2024): draw G samples of one prompt; the
advantage of sample i is (r_i − mean_g r) / (std_g r + ε). The group's mean is the
baseline a value model would otherwise learn; a group whose samples all score the same
teaches nothing (its advantages are 0).

**A KL term to the start** keeps the policy near the model it started from, which the
reward does not see: for two Gaussians of one σ it is ‖μ_θ − μ_ref‖² / (2σ²), exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Step:
    """One stochastic DDIM step: the timestep t, the previous one, ᾱ at both, and the step's standard deviation σ."""

    t: int
    prev_t: int
    alpha_bar: float
    alpha_bar_prev: float
    sigma: float


def ddim_steps(scheduler: Any, num_inference_steps: int, eta: float = 1.0) -> list[Step]:
    """The steps of a DDIM chain of ``num_inference_steps`` on ``scheduler`` (a diffusers DDIMScheduler), with σ_t."""
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must be in (0, 1] (0 is deterministic DDIM: no likelihood to train), got {eta!r}")
    scheduler.set_timesteps(num_inference_steps)
    ratio = scheduler.config.num_train_timesteps // num_inference_steps
    abar = scheduler.alphas_cumprod.double()
    steps = []
    for t in scheduler.timesteps.tolist():
        prev = t - ratio
        a, a_prev = float(abar[t]), float(abar[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(max(0.0, 1 - a / a_prev))
        steps.append(Step(int(t), prev, a, a_prev, sigma))
    return steps


def step_mean(step: Step, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """μ_θ, the mean of x_{t-1} given x_t and the clean-image estimate ``x0`` (clipped to [-1, 1], as DDIM does)."""
    x0 = x0.clamp(-1, 1)
    eps = (x_t - math.sqrt(step.alpha_bar) * x0) / math.sqrt(1 - step.alpha_bar)
    return math.sqrt(step.alpha_bar_prev) * x0 + math.sqrt(max(0.0, 1 - step.alpha_bar_prev - step.sigma**2)) * eps


def log_prob(x_prev: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x_prev; mean, σ² I) per row, averaged over the row's dimensions (DDPO's scale), shape (B,)."""
    if sigma <= 0:
        raise ValueError("a step with sigma = 0 is deterministic and has no likelihood")
    z = (x_prev - mean) / sigma
    per_dim = -0.5 * z.square() - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return per_dim.flatten(1).mean(1)


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """KL(N(mean, σ²) ‖ N(ref_mean, σ²)) per row, averaged over dimensions: ‖mean − ref‖² / (2σ²)."""
    return ((mean - ref_mean).square() / (2 * sigma**2)).flatten(1).mean(1)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages: each reward minus its group's mean, over the group's standard deviation (+ ``eps``).

    ``rewards`` holds consecutive groups of ``group_size`` samples of one prompt each.
    """
    if group_size < 2 or len(rewards) % group_size:
        raise ValueError(f"rewards must come in groups of at least 2 samples; got {len(rewards)} rewards in groups "
                         f"of {group_size}")
    r = rewards.float().view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).flatten()


def policy_loss(advantages: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """REINFORCE with given advantages: −mean(A · log π). Its gradient raises the likelihood of what scored above
    its group. (With one update per rollout, PPO's clipped ratio equals 1 and gives this same gradient.)"""
    return -(advantages.detach() * log_probs).mean()


def sequence_kl_loss(nll: torch.Tensor, ref_nll: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient is KL(q_θ ‖ q_ref)'s over sampled sequences: mean(k · log q_θ), k = log q_θ − log q_ref.

    ``nll`` and ``ref_nll`` are −log q of each sampled sequence under the policy and the
    reference. ∇ E_q[log q − log q_ref] = E_q[(log q − log q_ref) ∇ log q], as the KL
    penalty folded into the reward of RLHF gives.
    """
    k = (ref_nll - nll).detach()
    return (k * -nll).mean()


__all__ = ["Step", "ddim_steps", "gaussian_kl", "group_advantages", "log_prob", "policy_loss", "sequence_kl_loss",
           "step_mean"]
