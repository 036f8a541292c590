"""What every exercise check must do, shared by the per-notebook exercise tests."""

from __future__ import annotations

from typing import Any, Callable

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback


def assert_grades(check: Callable[[Any], Feedback], right: Any, wrong: Any) -> None:
    """``check`` accepts ``right``, refuses ``wrong``, says "no answer" to ``...`` and refuses junk without raising."""
    assert check(right).ok
    assert not check(wrong).ok
    missing = check(...)
    assert not missing.ok and missing.message == NO_ANSWER
    for junk in ("seven", None, {"a": 1}):
        assert not check(junk).ok
