"""What a correct joint likelihood is, and two objectives that are not one.

* A joint table P(I, D) factorises as P(D) P(I | D) = P(I) P(D | I); both are the joint.
* The "joint objective" P(I | D) P(D | I) is not a distribution: it does not sum to 1 and
  its maximiser can differ from the joint's (it rewards rare pairs that predict each other).
* An energy P(I) ∝ exp(-‖G_θ(I)‖² / 2σ²) is not a generator's likelihood: its normaliser
  Z(θ) depends on θ. On the 1-D toy G_θ(x) = θ·x the unnormalised objective prefers θ → 0
  whatever the data, while the change-of-variables likelihood, which adds log|θ|, has
  its maximum at θ* = σ / √(mean x²).
"""

from __future__ import annotations

import numpy as np


def example_joint_table() -> np.ndarray:
    """A 3 × 3 joint P(I = i, D = d) (rows: images, columns: descriptions) used in notebook 01.

    The pair (2, 2) is rare (probability 0.05) but image 2 and description 2 only occur
    together, so P(I | D) P(D | I) = 1 there.
    """
    return np.array(
        [
            [0.30, 0.20, 0.00],
            [0.20, 0.25, 0.00],
            [0.00, 0.00, 0.05],
        ]
    )


def factorise(joint: np.ndarray) -> dict[str, np.ndarray]:
    """Marginals and conditionals of a joint table with rows I and columns D.

    Returns ``p_i``, ``p_d``, ``p_i_given_d`` (each column sums to 1) and ``p_d_given_i``
    (each row sums to 1). Zero-probability rows or columns give zero conditionals.
    """
    joint = np.asarray(joint, dtype=float)
    p_i = joint.sum(axis=1)
    p_d = joint.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_i_given_d = np.where(p_d[None, :] > 0, joint / p_d[None, :], 0.0)
        p_d_given_i = np.where(p_i[:, None] > 0, joint / p_i[:, None], 0.0)
    return {"p_i": p_i, "p_d": p_d, "p_i_given_d": p_i_given_d, "p_d_given_i": p_d_given_i}


def product_of_conditionals(joint: np.ndarray) -> np.ndarray:
    """The table P(I | D) · P(D | I), the so-called "joint objective" (not a distribution)."""
    f = factorise(joint)
    return f["p_i_given_d"] * f["p_d_given_i"]


def scale_log_likelihood(theta: np.ndarray | float, x: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Mean log-likelihood of data ``x`` under the model G_θ(x) = θ·x ~ N(0, σ²).

    By change of variables p_θ(x) = N(θx; 0, σ²) · |θ|, i.e. x ~ N(0, σ²/θ²). Vectorised
    over ``theta``.
    """
    theta = np.asarray(theta, dtype=float)[..., None]
    x = np.asarray(x, dtype=float)
    log_n = -0.5 * (theta * x) ** 2 / sigma**2 - 0.5 * np.log(2 * np.pi * sigma**2)
    return (log_n + np.log(np.abs(theta))).mean(axis=-1)


def scale_unnormalised_objective(theta: np.ndarray | float, x: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Mean of log exp(-‖G_θ(x)‖²/2σ²) = -θ² x² / 2σ²: the energy without its normaliser.

    It is largest (zero) at θ = 0 for any data: the network can collapse.
    """
    theta = np.asarray(theta, dtype=float)[..., None]
    x = np.asarray(x, dtype=float)
    return (-0.5 * (theta * x) ** 2 / sigma**2).mean(axis=-1)


def scale_partition(theta: np.ndarray | float, sigma: float = 1.0) -> np.ndarray:
    """Z(θ) = ∫ exp(-θ² x² / 2σ²) dx = √(2π) σ / |θ|: the normaliser depends on θ."""
    return np.sqrt(2 * np.pi) * sigma / np.abs(np.asarray(theta, dtype=float))


def scale_mle(x: np.ndarray, sigma: float = 1.0) -> float:
    """Closed-form maximiser θ* > 0 of :func:`scale_log_likelihood`: σ / √(mean x²)."""
    return float(sigma / np.sqrt(np.mean(np.asarray(x, dtype=float) ** 2)))
