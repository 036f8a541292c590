"""Distances between sets of embeddings: CLIPScore, CMMD and the Fréchet distance.

These take embeddings, not images or text, so they need no model: the CLIP module
computes the embeddings and calls these. All accept numpy arrays or torch tensors of
shape (N, D) and compute in float64.

* :func:`clip_score`: how well each image matches its own caption (Hessel et al. 2021).
* :func:`cmmd`: how far apart two sets of image embeddings are, by maximum mean
  discrepancy with a Gaussian kernel (Jayasumana et al. 2024, "Rethinking FID").
* :func:`frechet_distance`: the FID formula, the Fréchet distance between Gaussians
  fitted to two sets (Heusel et al. 2017), usable on any embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _matrix(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array with at least ``min_rows`` rows."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of embeddings (N, D), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} embeddings, got {array.shape[0]}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has embeddings of dimension 0")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _same_dim(x: np.ndarray, y: np.ndarray, names: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names} must have the same embedding dimension, got {x.shape[1]} and {y.shape[1]}")


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} holds a zero vector, which has no direction")
    return x / norms


def clip_score(image_embeddings: Any, text_embeddings: Any, weight: float = 100.0) -> float:
    """CLIPScore: the mean over pairs of ``weight · max(cos(image_i, text_i), 0)``.

    Row ``i`` of each array embeds one image and its caption; both are normalised here.
    ``weight=100`` follows torchmetrics and most text-to-image papers (scores in
    [0, 100], ~30 for a good match with real CLIP); Hessel et al. use ``w = 2.5``. The
    clip at 0 is per pair, as in Hessel et al.; torchmetrics clips the mean instead,
    which differs only when some cosine is negative (rare with real CLIP embeddings).
    """
    img = _matrix(image_embeddings, "image_embeddings", min_rows=1)
    txt = _matrix(text_embeddings, "text_embeddings", min_rows=1)
    if img.shape != txt.shape:
        raise ValueError(f"image and text embeddings must pair up row by row: shapes {img.shape} and {txt.shape}")
    cos = (_unit(img, "image_embeddings") * _unit(txt, "text_embeddings")).sum(axis=1)
    return float(weight * np.maximum(cos, 0.0).mean())


def _rbf_mean(a: np.ndarray, b: np.ndarray, gamma: float, skip_diagonal: bool) -> float:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    k = np.exp(-gamma * np.maximum(sq, 0.0))
    if skip_diagonal:
        n = len(a)
        return float((k.sum() - np.trace(k)) / (n * (n - 1)))
    return float(k.mean())


def cmmd(x: Any, y: Any, sigma: float = 10.0, scale: float = 1000.0, unbiased: bool = False) -> float:
    """CMMD (Jayasumana et al. 2024): ``scale ·`` MMD² between two sets of embeddings.

    The kernel is the Gaussian RBF ``exp(-|a − b|² / (2σ²))`` on embeddings normalised
    to unit length, with the paper's ``σ = 10`` and ``scale = 1000``. By default this is
    the estimator of the reference implementation (google-research ``cmmd/distance.py``),
    which, as its docstring says, is the *biased*, minimum-variance one (Gretton et al.
    2012, Eq. 5): every kernel mean includes the diagonal, so ``cmmd(x, x) == 0``
    exactly and two samples of one distribution give a small positive value.
    ``unbiased=True`` drops the diagonals of the within-set means (the U-statistic), zero
    in expectation for one distribution and sometimes slightly negative. The two
    differ by O(1/N).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    xa = _unit(_matrix(x, "x"), "x")
    ya = _unit(_matrix(y, "y"), "y")
    _same_dim(xa, ya, "x and y")
    gamma = 1.0 / (2.0 * sigma**2)
    k_xx = _rbf_mean(xa, xa, gamma, skip_diagonal=unbiased)
    k_yy = _rbf_mean(ya, ya, gamma, skip_diagonal=unbiased)
    k_xy = _rbf_mean(xa, ya, gamma, skip_diagonal=False)
    return float(scale * (k_xx + k_yy - 2.0 * k_xy))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix, by eigen-decomposition."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between Gaussians fitted to two sets: the formula of FID.

    ``|μx − μy|² + Tr(Σx + Σy − 2 (Σx Σy)^½)`` with unbiased (N − 1) covariances. The
    trace of the matrix square root is computed stably in float64 as the sum of the
    square roots of the eigenvalues of the symmetric ``Σx^½ Σy Σx^½`` (same eigenvalues
    as ``Σx Σy``), tiny negative eigenvalues from rounding clipped to 0. Note that with
    fewer samples than dimensions the covariances are singular and the value is biased.
    """
    xa, ya = _matrix(x, "x"), _matrix(y, "y")
    _same_dim(xa, ya, "x and y")
    mu_x, mu_y = xa.mean(axis=0), ya.mean(axis=0)
    cov_x = np.atleast_2d(np.cov(xa, rowvar=False))
    cov_y = np.atleast_2d(np.cov(ya, rowvar=False))
    root_x = _sqrtm_psd(cov_x)
    middle = root_x @ cov_y @ root_x
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2.0 * trace_sqrt)
    return max(value, 0.0)
