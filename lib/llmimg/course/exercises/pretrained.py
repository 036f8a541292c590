"""Checks for notebook 09 (pretrained models): CLIP re-ranking, CLIPScore, and where the time goes."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmimg.course.exercises.feedback import Feedback, check_function, check_number

__all__ = ["check_best_of_n", "check_clip_score", "check_denoise_share", "check_rerank"]


def check_rerank(answer: Any, n_cases: int = 20, seed: int = 0) -> Feedback:
    """Does the learner's ``rerank(z_prompt, z_candidates) -> int`` pick the candidate nearest the prompt?

    It is called on ``n_cases`` random cases: ``z_prompt`` a ``(D,)`` array, ``z_candidates``
    an ``(n, D)`` array, neither of unit length (so a plain dot product is not enough).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        n, d = int(rng.integers(2, 7)), int(rng.integers(3, 9))
        z_prompt = rng.normal(size=d)
        z_candidates = rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=(n, 1))  # lengths differ a lot
        cosine = z_candidates @ z_prompt / (np.linalg.norm(z_candidates, axis=1) * np.linalg.norm(z_prompt))
        cases.append(((z_prompt, z_candidates), int(cosine.argmax())))

    def problem(result: Any, best: int, args: tuple) -> str | None:
        chosen = _index(result)
        if chosen is None:
            return "`rerank` should return one whole number: the index of the chosen candidate"
        if chosen == best:
            return None
        z_prompt, z_candidates = args
        hint = (" (it has the largest dot product: the vectors are not unit length, divide by their norms)"
                if chosen == int((z_candidates @ z_prompt).argmax()) else "")
        return f"`rerank` chose candidate {chosen}, but candidate {best} has the largest cosine similarity{hint}"

    return check_function(answer, "rerank", cases, problem)


def _index(value: Any) -> int | None:
    try:
        array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except (TypeError, ValueError):
        return None
    if array.shape != () or not np.issubdtype(array.dtype, np.integer):
        return None
    return int(array)


def check_clip_score(cosine: float, answer: Any) -> Feedback:
    """CLIPScore of an image and a text whose CLIP features have cosine similarity ``cosine``."""
    if not -1 <= cosine <= 1:
        raise ValueError(f"a cosine similarity lies in [-1, 1], got {cosine}")
    return check_number(answer, 100 * max(cosine, 0.0), what="CLIPScore",
                        hint="CLIPScore is 100 times the cosine similarity, and 0 when the cosine is negative")


def check_denoise_share(fixed_ms: float, ms_per_step: float, steps: int, answer: Any) -> Feedback:
    """The share of a call's time spent denoising at ``steps`` steps (a number between 0 and 1)."""
    if fixed_ms < 0 or ms_per_step <= 0 or steps <= 0:
        raise ValueError("the times must be non-negative (the step's positive) and steps positive")
    total = fixed_ms + steps * ms_per_step
    return check_number(answer, steps * ms_per_step / total, rtol=1e-2, what="the denoising share",
                        hint="the loop costs steps × the step's time; the rest of the call costs the same at any "
                             "step count; divide the loop's part by the whole")


def check_best_of_n(a: float, n: int, answer: Any) -> Feedback:
    """The chance that best-of-``n`` re-ranking can keep a faithful description, when each draw is faithful with ``a``.

    With a perfect re-ranker it keeps one whenever at least one of the ``n`` independent
    candidates is faithful: ``1 - (1 - a)**n``.
    """
    if not 0 <= a <= 1 or n < 1:
        raise ValueError("a must be a probability and n at least 1")
    try:
        all_faithful = bool(np.isclose(float(answer), a**n))
    except (TypeError, ValueError):
        all_faithful = False
    hint = ("a**n is the chance that all n are faithful; one faithful candidate is enough" if all_faithful
            else "compute the chance that all n candidates miss, (1 − a)^n, and take its complement")
    return check_number(answer, 1 - (1 - a) ** n, rtol=1e-3, what=f"the chance with n = {n}", hint=hint)
