"""Classifier-free guidance on a 2-D Gaussian mixture whose scores are known exactly.

Data: class c with probability π_c, then x ~ N(μ_c, Σ_c). Under the forward process each
component stays Gaussian, so the noisy densities are again mixtures:

    p_t(x | c) = N(x; √ᾱ_t μ_c, ᾱ_t Σ_c + (1 - ᾱ_t) I),   p_t(x) = Σ_c π_c p_t(x | c),

and the scores ∇ log p_t(x) and ∇ log p_t(x | c) are analytic. Bayes' rule gives
∇ log p_t(x | c) = ∇ log p_t(x) + ∇ log p_t(c | x). Guidance with weight w uses

    s_w(x) = ∇ log p_t(x) + w (∇ log p_t(x | c) - ∇ log p_t(x)),

which at t = 0 is the score of the "tilted" density p(x) p(c | x)^w. Because guidance is
applied to every noisy marginal p_t, and the noisy marginals of the tilted density are
not the tilted noisy marginals, sampling with s_w does not sample p(x) p(c | x)^w exactly
when w ∉ {0, 1}. Everything here is in float64 torch so autograd can check the formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from llmimg.course.theory.diffusion import alpha_bars, reverse_variance


@dataclass(frozen=True)
class GaussianMixture:
    """Class weights ``weights`` (C), means ``means`` (C, D) and covariances ``covs`` (C, D, D)."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    def noisy(self, alpha_bar: float) -> GaussianMixture:
        """The mixture of x_t = √ᾱ x_0 + √(1-ᾱ) ε: means √ᾱ μ_c, covariances ᾱ Σ_c + (1-ᾱ) I."""
        eye = torch.eye(self.means.shape[1], dtype=self.means.dtype)
        return GaussianMixture(
            self.weights,
            math.sqrt(alpha_bar) * self.means,
            alpha_bar * self.covs + (1.0 - alpha_bar) * eye,
        )


def toy_mixture() -> GaussianMixture:
    """The three-class 2-D mixture of notebook 01 (overlapping classes, fixed numbers)."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]], dtype=torch.float64)
    covs = torch.tensor(
        [
            [[0.50, 0.20], [0.20, 0.40]],
            [[0.40, -0.15], [-0.15, 0.50]],
            [[0.60, 0.00], [0.00, 0.25]],
        ],
        dtype=torch.float64,
    )
    return GaussianMixture(weights, means, covs)


def component_log_probs(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """log N(x; μ_c, Σ_c) for every point (rows) and class (columns)."""
    dim = x.shape[1]
    diff = x[:, None, :] - mix.means[None]
    maha = torch.einsum("ncd,cde,nce->nc", diff, torch.linalg.inv(mix.covs), diff)
    return -0.5 * (maha + torch.logdet(mix.covs) + dim * math.log(2 * math.pi))


def log_prob(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log Σ_c π_c N(x; μ_c, Σ_c)."""
    return torch.logsumexp(component_log_probs(mix, x) + mix.weights.log(), dim=1)


def class_log_posterior(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """log p(c | x) for every point (rows) and class (columns), by Bayes' rule."""
    joint = component_log_probs(mix, x) + mix.weights.log()
    return joint - torch.logsumexp(joint, dim=1, keepdim=True)


def component_scores(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """∇_x log N(x; μ_c, Σ_c) = -Σ_c⁻¹ (x - μ_c), shape (n, C, D)."""
    diff = x[:, None, :] - mix.means[None]
    return -torch.einsum("cde,nce->ncd", torch.linalg.inv(mix.covs), diff)


def class_score(mix: GaussianMixture, x: torch.Tensor, c: int) -> torch.Tensor:
    """∇_x log p(x | c) (analytic)."""
    return component_scores(mix, x)[:, c]


def score(mix: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """∇_x log p(x) = Σ_c p(c | x) ∇_x log p(x | c) (analytic)."""
    post = class_log_posterior(mix, x).exp()
    return (post[..., None] * component_scores(mix, x)).sum(1)


def guided_score(mix: GaussianMixture, x: torch.Tensor, c: int, w: float) -> torch.Tensor:
    """Classifier-free guided score ∇ log p(x) + w (∇ log p(x | c) - ∇ log p(x))."""
    scores = component_scores(mix, x)
    uncond = (class_log_posterior(mix, x).exp()[..., None] * scores).sum(1)
    return uncond + w * (scores[:, c] - uncond)


def sample_guided(
    mix: GaussianMixture,
    c: int,
    w: float,
    betas: np.ndarray,
    n: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """DDPM ancestral sampling with the exact guided score of the noisy mixture.

    At each step t (T-1 down to 0): ε̂ = -√(1-ᾱ_t) s_w(x_t), x_{t-1} = μ_θ(x_t, ε̂) + √β̃_t z,
    with no noise at the last step. ``w = 0`` samples p(x), ``w = 1`` samples p(x | c).
    """
    betas = np.asarray(betas, dtype=np.float64)
    ab = alpha_bars(betas)
    dim = mix.means.shape[1]
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    for t in range(len(betas) - 1, -1, -1):
        s = guided_score(mix.noisy(float(ab[t])), x, c, w)
        eps = -math.sqrt(1.0 - ab[t]) * s
        x = (x - betas[t] / math.sqrt(1.0 - ab[t]) * eps) / math.sqrt(1.0 - betas[t])
        if t > 0:
            var = float(reverse_variance(t, betas, "posterior"))
            x = x + math.sqrt(var) * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return x


def tilted_grid_stats(
    mix: GaussianMixture, c: int, w: float, lim: float = 6.0, size: int = 401
) -> dict[str, np.ndarray | float]:
    """Mean and E[p(c | x)] of the tilted density p(x) p(c | x)^w, on a regular grid.

    Also returns the normalised grid density (``density``, with ``xs`` the grid axis) for
    contour plots.
    """
    xs = torch.linspace(-lim, lim, size, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    log_post = class_log_posterior(mix, pts)[:, c]
    logd = log_prob(mix, pts) + w * log_post
    dens = torch.softmax(logd, dim=0)
    return {
        "mean": (dens[:, None] * pts).sum(0).numpy(),
        "class_prob": float((dens * log_post.exp()).sum()),
        "density": dens.reshape(size, size).numpy(),
        "xs": xs.numpy(),
    }
