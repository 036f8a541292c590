"""How sure a rate is, and whether two settings differ: standard errors and the course's two-standard-error rule.

* :func:`standard_error` and :func:`rate_with_se`: a rate (or a mean score) with its error bar;
* :func:`compare_rates`: two rates measured on *independent* trials;
* :func:`paired_difference`: two settings scored on the *same* items (same prompts, same
  noise), the course's protocol: the per-item differences give the paired standard error,
  usually far smaller than the unpaired one, and, for right/wrong scores, the discordant
  items give an exact McNemar test. A difference below two paired standard errors is noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, NamedTuple, Sequence

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


class Rate(NamedTuple):
    """A rate (or mean score) over ``n`` items and its standard error."""

    rate: float
    se: float
    n: int


def _scores(x: Any, what: str) -> np.ndarray:
    """Per-item scores as a 1-D float array; empty, non-numeric or non-finite ones raise one ValueError line."""
    try:
        array = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, one per item") from None
    if array.ndim != 1:
        raise ValueError(f"{what} must be one score per item (a 1-D sequence), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what} holds no items")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds a NaN or infinite score")
    return array


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.isin(a, (0.0, 1.0)).all()) for a in arrays)


def rate_with_se(x: Any) -> Rate:
    """The mean of per-item scores ``x`` (0/1 right/wrong, or real values) with its standard error.

    The standard error is ``std(x) / sqrt(n)`` with the plug-in ``std`` (divisor ``n``), so for
    0/1 scores it is exactly :func:`standard_error` of the rate: ``sqrt(p (1 - p) / n)``.
    """
    array = _scores(x, "the scores")
    return Rate(float(array.mean()), float(array.std() / math.sqrt(array.size)), int(array.size))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """The exact two-sided McNemar p-value from the discordant counts (a right and b wrong, a wrong and b right).

    Under "no difference" each of the ``m = a_only + b_only`` discordant items goes either
    way with probability 1/2: p = min(1, 2 P(Binomial(m, 1/2) <= min(a_only, b_only))); 1 when m = 0.
    """
    if min(a_only, b_only) < 0:
        raise ValueError(f"discordant counts are non-negative, got {a_only} and {b_only}")
    m, k = a_only + b_only, min(a_only, b_only)
    tail = Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2**m)  # exact: no underflow for large m
    return float(min(Fraction(1), 2 * tail))


def z_score(diff: float, se: float) -> float:
    """``diff`` in units of its standard error ``se`` (0 with no difference; infinite when se is 0 and diff is not)."""
    if diff == 0:
        return 0.0
    return math.copysign(math.inf, diff) if se == 0 else diff / se


def beyond_noise(diff: float, se: float) -> bool:
    """The course's rule, stated once: a difference is real when it is at least two of its standard errors.

    ``se`` is the standard error of the difference itself: paired, when both sides were
    measured on the same items. :meth:`PairedDifference.verdict` reads it, and so do the
    notebooks' verdicts on differences of other statistics (a TV distance, a ratio).
    """
    return abs(z_score(diff, se)) >= 2


@dataclass(frozen=True)
class PairedDifference:
    """Two settings a and b scored on the same ``n`` items, compared item by item.

    ``diff`` is ``mean_a - mean_b``; ``se`` its paired standard error, ``std(a_i - b_i) / sqrt(n)``
    (plug-in ``std``; for 0/1 scores the textbook ``sqrt((a_only + b_only) - (a_only - b_only)² / n) / n``).
    For 0/1 scores ``a_only`` counts the items a got right and b wrong, ``b_only`` the reverse,
    and ``p_value`` is the exact two-sided McNemar test (:func:`mcnemar_p`); for real-valued
    scores the three are None.
    """

    mean_a: float
    mean_b: float
    diff: float
    se: float
    n: int
    a_only: int | None = None
    b_only: int | None = None
    p_value: float | None = None

    @property
    def z(self) -> float:
        """The difference in paired standard errors (0 with no difference; infinite when se is 0 and diff is not)."""
        return z_score(self.diff, self.se)

    def verdict(self, name_a: str = "a", name_b: str = "b") -> str:
        """The course's rule: ``"within noise"`` below two paired standard errors, else ``"<name> ahead"``.

        With se 0 (every item moved by the same amount) a non-zero difference is "ahead":
        there is no sampling noise to hide it; read ``p_value`` and ``n`` for how much that says.
        """
        if not beyond_noise(self.diff, self.se):
            return "within noise"
        return f"{name_a if self.diff > 0 else name_b} ahead"

    def sentence(self, name_a: str = "a", name_b: str = "b") -> str:
        """One line: both means, the difference in points with its paired standard error, the verdict."""
        z = "" if math.isinf(self.z) else f", {abs(self.z):.1f} se"
        mcnemar = "" if self.p_value is None else (f"; discordant {self.a_only} vs {self.b_only}, "
                                                   f"McNemar p = {self.p_value:.3g}")
        return (f"{name_a} {self.mean_a:.3f} vs {name_b} {self.mean_b:.3f} on {self.n} paired items: "
                f"{100 * self.diff:+.1f} points (paired se {100 * self.se:.1f}{z}){mcnemar}: "
                f"{self.verdict(name_a, name_b)}")

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain Python values, ready for JSON."""
        return asdict(self)


def paired_difference(a: Sequence[float] | Any, b: Sequence[float] | Any) -> PairedDifference:
    """Compare settings a and b scored on the same items: ``a[i]`` and ``b[i]`` are item i's scores.

    Scores are 0/1 (right/wrong, e.g. ShapesEval's all-correct per image) or real values
    (e.g. CLIPScores); lists, arrays and tensors are accepted. See :class:`PairedDifference`.
    """
    a, b = _scores(a, "a's scores"), _scores(b, "b's scores")
    if a.size != b.size:
        raise ValueError(f"paired scores need one score per item in both settings, got {a.size} and {b.size}")
    d = a - b
    se = float(d.std() / math.sqrt(d.size))
    counts: dict[str, Any] = {}
    if _is_binary(a, b):
        a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        counts = {"a_only": a_only, "b_only": b_only, "p_value": mcnemar_p(a_only, b_only)}
    return PairedDifference(float(a.mean()), float(b.mean()), float(d.mean()), se, int(d.size), **counts)


__all__ = ["PairedDifference", "Rate", "beyond_noise", "compare_rates", "mcnemar_p", "paired_difference",
           "rate_with_se", "standard_error", "z_score"]
