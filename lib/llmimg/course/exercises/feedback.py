"""The answer a ``check_...`` helper gives a learner.

Checks never raise on a wrong answer: they return a :class:`Feedback` that says
right or not yet, and why, so an exercise cell always runs to the end. A notebook
shows it as one line; code can test it with ``bool(feedback)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Feedback:
    """Result of checking one exercise answer."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'✓ correct' if self.ok else '✗ not yet'}: {self.message}"

    def _repr_markdown_(self) -> str:
        return f"**{'✓ correct' if self.ok else '✗ not yet'}**: {self.message}"


NO_ANSWER = "no answer yet: replace the `...` with your answer and run the cell again"


def is_unanswered(answer: Any) -> bool:
    """True for the placeholders an exercise cell starts with (``...`` or ``None``)."""
    return answer is Ellipsis or answer is None


def check_number(answer: Any, expected: float, *, rtol: float = 1e-3, atol: float = 1e-6,
                 what: str = "the value", hint: str = "") -> Feedback:
    """Compare a numeric answer with the expected value within a tolerance."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return Feedback(False, f"{what} should be a single number, got {type(answer).__name__}")
    if np.isclose(value, expected, rtol=rtol, atol=atol):
        return Feedback(True, f"{what} is {value:.6g}")
    return Feedback(False, f"{what} is {value:.6g}, which is off. {hint}".strip())


def check_array(answer: Any, expected: np.ndarray, *, rtol: float = 1e-3, atol: float = 1e-6,
                what: str = "the array", hint: str = "") -> Feedback:
    """Compare an array answer (NumPy, torch or nested lists) with the expected one."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    try:
        value = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer, dtype=float)
    except (TypeError, ValueError):
        return Feedback(False, f"{what} should be an array of numbers, got {type(answer).__name__}")
    expected = np.asarray(expected, dtype=float)
    if value.shape != expected.shape:
        return Feedback(False, f"{what} has shape {value.shape}, expected {expected.shape}")
    if np.allclose(value, expected, rtol=rtol, atol=atol):
        return Feedback(True, f"{what} matches")
    worst = float(np.max(np.abs(value - expected)))
    return Feedback(False, f"{what} differs by up to {worst:.3g}. {hint}".strip())


def check_function(answer: Any, name: str, cases: list[tuple[tuple, Any]],
                   problem: Callable[[Any, Any, tuple], str | None]) -> Feedback:
    """Grade the learner's function ``name`` by calling it on hidden ``cases``.

    Each case is ``(args, expected)``; the function gets copies of ``args``.
    ``problem(result, expected, args)`` returns None when the result is right, else what
    is wrong with it in words (the more specific, the better the feedback). An error
    raised by the learner's code is feedback too, never a crash.
    """
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    if not callable(answer):
        return Feedback(False, f"the answer should be your function `{name}`, got {type(answer).__name__}")
    for number, (args, expected) in enumerate(cases, start=1):
        try:
            result = answer(*copy.deepcopy(args))
        except Exception as err:  # the learner's code: any error is feedback
            return Feedback(False, f"`{name}` raised {type(err).__name__}: {err}")
        if is_unanswered(result):  # the function's body is still `...`
            return Feedback(False, NO_ANSWER)
        wrong = problem(result, expected, args)
        if wrong:
            return Feedback(False, f"in case {number} of {len(cases)}, {wrong}")
    return Feedback(True, f"`{name}` is right in all {len(cases)} cases")


def as_number(value: Any) -> float | None:
    """A learner's single number (Python, NumPy or torch, gradients or not) as a float; None if it is not one."""
    try:
        return float(np.asarray(value.detach() if hasattr(value, "detach") else value, dtype=float))
    except (TypeError, ValueError):
        return None


def array_problem(result: Any, expected: Any, what: str, *, rtol: float = 1e-4, atol: float = 1e-6) -> str | None:
    """None if ``result`` is an array (NumPy, torch or lists) close to ``expected``, else what is off."""
    feedback = check_array(result, expected, rtol=rtol, atol=atol, what=what)
    return None if feedback.ok else feedback.message
