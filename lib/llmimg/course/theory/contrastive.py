"""Contrastive learning (InfoNCE, the CLIP loss) as a lower bound on mutual information.

For a batch of N pairs (x_i, y_i) and a critic f, the InfoNCE loss is

    L = -1/N Σ_i log( exp f(x_i, y_i) / Σ_j exp f(x_i, y_j) ),

and I(X; Y) ≥ log N - L (in expectation). The toy: x, y ∈ R^dim with independent
coordinate pairs of correlation ρ, so I(X; Y) = -dim/2 · log(1 - ρ²) and the optimal
critic f*(x, y) = log p(y | x) / p(y) is known in closed form. CLIP uses the symmetric
version (image→text and text→image) with f = logit_scale · cosine similarity.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_mutual_information(dim: int, rho: float) -> float:
    """I(X; Y) in nats for ``dim`` independent coordinate pairs with correlation ``rho``."""
    return float(-0.5 * dim * np.log(1.0 - rho**2))


def sample_correlated_gaussians(
    n: int, dim: int, rho: float, rng: np.random.Generator, batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw pairs with x ~ N(0, I) and y = ρ x + √(1-ρ²) ε.

    Shapes are (n, dim), or (batches, n, dim) when ``batches`` is given.
    """
    shape = (n, dim) if batches is None else (batches, n, dim)
    x = rng.standard_normal(shape)
    y = rho * x + np.sqrt(1.0 - rho**2) * rng.standard_normal(shape)
    return x, y


def optimal_critic(x: np.ndarray, y: np.ndarray, rho: float) -> np.ndarray:
    """Scores S[..., i, j] = log p(y_j | x_i) - log p(y_j), the optimal InfoNCE critic.

    p(y | x) = N(ρx, (1-ρ²) I) and p(y) = N(0, I).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    dim = x.shape[-1]
    diff = y[..., None, :, :] - rho * x[..., :, None, :]
    log_cond = -0.5 * (diff**2).sum(-1) / (1.0 - rho**2) - 0.5 * dim * np.log(1.0 - rho**2)
    log_marg = -0.5 * (y**2).sum(-1)[..., None, :]
    return log_cond - log_marg


def infonce_loss(scores: np.ndarray) -> np.ndarray:
    """InfoNCE loss of a score matrix (rows: x_i, columns: y_j, positives on the diagonal).

    Works on a batch of matrices (..., N, N) and returns one loss per matrix.
    """
    scores = np.asarray(scores, dtype=float)
    m = scores.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(scores - m).sum(axis=-1, keepdims=True)))[..., 0]
    diag = np.diagonal(scores, axis1=-2, axis2=-1)
    return (lse - diag).mean(axis=-1)


def infonce_bound(
    batch_size: int, dim: int, rho: float, batches: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Monte Carlo estimate of log N - L_InfoNCE with the optimal critic on the Gaussian toy.

    Returns (mean over ``batches`` batches, its standard error). Batches are processed in
    chunks so that memory stays small for large ``batch_size``.
    """
    chunk = max(1, min(batches, 2_000_000 // (batch_size * batch_size * dim)))
    bounds = []
    for start in range(0, batches, chunk):
        x, y = sample_correlated_gaussians(batch_size, dim, rho, rng, batches=min(chunk, batches - start))
        bounds.append(np.log(batch_size) - infonce_loss(optimal_critic(x, y, rho)))
    b = np.concatenate(bounds)
    return float(b.mean()), (float(b.std(ddof=1) / np.sqrt(batches)) if batches > 1 else 0.0)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss on (already normalised) embeddings.

    The mean of image→text and text→image cross-entropies of the logits
    ``logit_scale · image_features @ text_features.T`` with the matching pairs on the
    diagonal.
    """
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
