"""A joint loss whose gradients reach both a toy "LLM" and a toy image generator.

* "LLM": a categorical p_φ(d | t) over a few descriptions, with logits φ[t].
* "generator": a Gaussian decoder p_θ(I | d) = N(μ_θ[d], σ² I).
* loss: the negative marginal log-likelihood of (prompt, image) pairs,

      L(φ, θ) = -mean log Σ_d p_φ(d | t) p_θ(I | d),

  computed exactly by enumerating d, so it is differentiable in φ and θ. The description
  is a latent variable: no description labels are needed, and the gradient tells the LLM
  to prefer descriptions the generator turns into the observed images.

Training "separately" instead fits each model on its own labelled data (t, d) and
(d, I); here that has a closed form (counts and class means).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn


class JointToy(nn.Module):
    """p_φ(d | t) · p_θ(I | d): ``logits`` (prompts × descriptions), ``means`` (descriptions × dim)."""

    def __init__(self, n_prompts: int, n_descriptions: int, dim: int, sigma: float,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.logits = nn.Parameter(torch.zeros(n_prompts, n_descriptions, dtype=torch.float64))
        self.means = nn.Parameter(
            0.1 * torch.randn(n_descriptions, dim, generator=generator, dtype=torch.float64)
        )

    def log_p_description(self, prompts: torch.Tensor) -> torch.Tensor:
        """log p_φ(d | t) for each prompt in ``prompts`` (n) and each description (columns)."""
        return torch.log_softmax(self.logits[prompts], dim=-1)

    def log_p_image(self, images: torch.Tensor) -> torch.Tensor:
        """log p_θ(I | d) for each image (rows, shape n × dim) and description (columns)."""
        dim = images.shape[1]
        sq = ((images[:, None, :] - self.means[None]) ** 2).sum(-1)
        return -0.5 * sq / self.sigma**2 - 0.5 * dim * math.log(2 * math.pi * self.sigma**2)

    def marginal_nll(self, prompts: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """-mean log Σ_d p_φ(d | t) p_θ(I | d), by enumeration over d."""
        joint = self.log_p_description(prompts) + self.log_p_image(images)
        return -torch.logsumexp(joint, dim=1).mean()


def true_joint_toy() -> JointToy:
    """The data-generating model of notebook 01: 2 prompts, 4 descriptions, 2-D "images"."""
    model = JointToy(2, 4, 2, sigma=0.3)
    with torch.no_grad():
        model.logits.copy_(torch.tensor([[1.5, 0.5, -1.0, -2.0], [-2.0, -1.0, 0.5, 1.5]], dtype=torch.float64).log_softmax(-1))
        model.means.copy_(torch.tensor([[-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64))
    return model


@torch.no_grad()
def sample_joint_data(model: JointToy, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Draw (prompt, description, image) triples: t uniform, d ~ p_φ(d | t), I ~ p_θ(I | d)."""
    n_prompts, _ = model.logits.shape
    t = torch.randint(n_prompts, (n,), generator=generator)
    d = torch.multinomial(model.log_p_description(t).exp(), 1, generator=generator)[:, 0]
    noise = torch.randn(n, model.means.shape[1], generator=generator, dtype=torch.float64)
    return t, d, model.means[d] + model.sigma * noise


def finite_difference_grad(loss_fn: Callable[[], torch.Tensor], param: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central finite differences of ``loss_fn()`` with respect to every entry of ``param``."""
    grad = torch.zeros_like(param, requires_grad=False)
    flat = param.data.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = float(loss_fn())
            flat[i] = old - eps
            down = float(loss_fn())
            flat[i] = old
            grad.view(-1)[i] = (up - down) / (2 * eps)
    return grad


def train_joint(model: JointToy, prompts: torch.Tensor, images: torch.Tensor, steps: int, lr: float = 0.05) -> list[float]:
    """Minimise the marginal NLL in φ and θ together with Adam (full batch); returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model.marginal_nll(prompts, images)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def fit_separately(prompts: torch.Tensor, descriptions: torch.Tensor, images: torch.Tensor,
                   n_prompts: int, n_descriptions: int, sigma: float) -> JointToy:
    """Maximum likelihood of each model on its own labelled pairs (needs the descriptions).

    φ: log of the (t, d) frequencies (add-one smoothed); θ: the mean image of each d.
    """
    model = JointToy(n_prompts, n_descriptions, images.shape[1], sigma)
    counts = torch.ones(n_prompts, n_descriptions, dtype=torch.float64)
    counts.index_put_((prompts, descriptions), torch.ones_like(prompts, dtype=torch.float64), accumulate=True)
    with torch.no_grad():
        model.logits.copy_(counts.log())
        for d in range(n_descriptions):
            if (descriptions == d).any():
                model.means[d] = images[descriptions == d].mean(0)
    return model


def match_descriptions(learned_means: torch.Tensor, true_means: torch.Tensor) -> tuple[int, ...]:
    """The relabelling of learned descriptions closest to the true ones (a latent is defined
    only up to permutation): ``perm[k]`` is the learned index that plays true description k."""
    best, best_cost = None, float("inf")
    for perm in itertools.permutations(range(true_means.shape[0])):
        cost = float(((learned_means[list(perm)] - true_means) ** 2).sum())
        if cost < best_cost:
            best, best_cost = perm, cost
    return tuple(best)
