"""How sure a rate is, and whether two rates differ: standard errors and the course's two-standard-error rule."""

from __future__ import annotations

import math

import numpy as np


def standard_error(rate: float, n: int) -> float:
    """The standard error of a rate measured on ``n`` independent trials: sqrt(p (1 - p) / n).

    Two rates whose difference is below about two standard errors of that difference,
    sqrt(se_a² + se_b²), cannot be told apart from noise.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a rate lies in [0, 1], got {rate}")
    return math.sqrt(rate * (1.0 - rate) / n)


def compare_rates(name_a: str, a: float, name_b: str, b: float, n_a: int, n_b: int | None = None) -> str:
    """One sentence comparing two rates measured on ``n_a`` and ``n_b`` independent trials, with the verdict.

    The difference is called real when it is at least two standard errors of the
    difference, sqrt(se_a² + se_b²), and noise otherwise; the sentence says which.
    """
    se = float(np.hypot(standard_error(a, n_a), standard_error(b, n_b or n_a)))
    diff = a - b
    if se == 0.0:
        verdict = "no difference" if diff == 0 else "a real difference (no sampling noise at these rates)"
    elif abs(diff) >= 2 * se:
        verdict = f"a real difference ({abs(diff) / se:.1f} standard errors)"
    else:
        verdict = f"within the noise ({abs(diff) / se:.1f} standard errors)"
    return (f"{name_a} {a:.3f} vs {name_b} {b:.3f}: {100 * diff:+.1f} points "
            f"(standard error {100 * se:.1f}): {verdict}")


__all__ = ["compare_rates", "standard_error"]
