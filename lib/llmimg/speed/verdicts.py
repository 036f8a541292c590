"""When a speed technique counts: equal quality by the paired rule, and a gain larger than the timing noise.

Pure functions on measured rows (no pipeline), so the rules can be tested on
constructed data; :func:`llmimg.speed.techniques.compare` applies them.

* **Quality.** Every setting draws image ``k`` from the same prompt and the same noise,
  so two settings are compared image by image (:func:`paired_quality`): the paired
  difference of all-correct and its paired standard error, and the course's rule
  (:func:`~llmimg.core.evaluation.statistics.beyond_noise`): a setting keeps a reference's
  quality unless it is *below* it by two paired standard errors or more. The older,
  looser reading (at most one unpaired standard error below, :func:`equal_quality`) is
  reported beside it.
* **Speed.** Timings are interleaved trials, so a slow moment of a shared machine falls on
  every setting alike; a ratio is taken trial by trial (:func:`ratios`). The noise of the
  run is measured by the *exact* switches, which draw the very same images as the
  default: :func:`timing_noise` is the largest relative spread of their ratio to the default
  across trials. A switch is kept in a stack only when its median gain exceeds it
  (:func:`gain_beyond_noise`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from llmimg.core.evaluation.statistics import beyond_noise, paired_difference, standard_error


def quality_se(row: Mapping[str, Any]) -> float:
    """``row``'s all-correct standard error, counted as if at least one of its ``n`` trials went the other way.

    A rate of 64/64 has a binomial standard error of 0, which would make any
    comparison with it demand 1.000 again; one trial's worth of doubt is the least
    its ``n`` leaves (as in :func:`llmimg.course.reference.tolerance`).
    """
    n = row.get("n")
    if not n:
        return float(row["all_correct_se"])
    return max(float(row["all_correct_se"]), standard_error(min(max(row["all_correct"], 1 / n), 1 - 1 / n), n))


def equal_quality(row: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """The one-standard-error reading: ``row``'s all-correct is not below ``reference``'s by more than one unpaired
    standard error of the difference (both floored at one trial, :func:`quality_se`). Shown beside the paired rule."""
    se = (quality_se(row) ** 2 + quality_se(reference) ** 2) ** 0.5
    return row["all_correct"] >= reference["all_correct"] - se


def paired_quality(row: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` against ``reference`` image by image, on the prompts both drew (the shorter list's, from the start).

    Both rows carry ``correct``, ShapesEval's all-correct per image, image ``k`` drawn from
    prompt ``k`` and noise ``k``. Returns ``paired_difference`` (row minus reference),
    ``paired_se``, ``n_paired``, ``keeps_quality`` (the course's paired rule: not below by
    two paired standard errors or more) and ``keeps_quality_1se`` (:func:`equal_quality`).
    """
    n = min(len(row["correct"]), len(reference["correct"]))
    if n == 0:
        raise ValueError("paired_quality needs per-image scores ('correct') on at least one shared prompt")
    diff = paired_difference(row["correct"][:n], reference["correct"][:n])
    return {"paired_difference": diff.diff, "paired_se": diff.se, "n_paired": n,
            "keeps_quality": not (diff.diff < 0 and beyond_noise(diff.diff, diff.se)),
            "keeps_quality_1se": equal_quality(row, reference)}


def keeps_quality(row: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """Whether ``row`` keeps ``reference``'s quality by the paired rule (:func:`paired_quality`)."""
    return paired_quality(row, reference)["keeps_quality"]


def ratios(reference_ms: Sequence[float], ms: Sequence[float]) -> list[float]:
    """Trial by trial, how many times faster than ``reference_ms`` a setting ran (trials interleaved, same length)."""
    if len(reference_ms) != len(ms) or not ms:
        raise ValueError(f"ratios need the same number of trials on both sides, got {len(reference_ms)} and {len(ms)}")
    return [r / m for r, m in zip(reference_ms, ms)]


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far repeated measurements of one thing wander, as a share of their median."""
    return (max(values) - min(values)) / statistics.median(values)


def timing_noise(ms_by_name: Mapping[str, Sequence[float]], reference: str, exact: Sequence[str]) -> float:
    """The run's timing noise: the largest relative spread, across trials, of an exact setting's speed ratio to
    ``reference`` (the setting itself, when no exact one was measured)."""
    spreads = [relative_spread(ratios(ms_by_name[reference], ms_by_name[name])) for name in exact if name in ms_by_name]
    return max(spreads) if spreads else relative_spread(ms_by_name[reference])


def gain_beyond_noise(before_ms: Sequence[float], after_ms: Sequence[float], noise: float) -> tuple[float, bool]:
    """The median gain of ``after`` over ``before`` (``0.1``: 10 % faster), and whether it exceeds ``noise``."""
    gain = statistics.median(ratios(before_ms, after_ms)) - 1
    return gain, gain > noise


__all__ = ["equal_quality", "gain_beyond_noise", "keeps_quality", "paired_quality", "quality_se", "ratios",
           "relative_spread", "timing_noise"]
