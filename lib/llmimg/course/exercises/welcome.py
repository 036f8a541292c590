"""Checks for notebook 00 (welcome): the pipeline's shape and the profiles."""

from __future__ import annotations

from typing import Any

from llmimg.core.config import PROFILES
from llmimg.core.data import parse_prompt
from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, check_function, is_unanswered

__all__ = ["check_pipeline_order", "check_text_intermediate", "check_ci_profile", "check_left_open"]

OPEN_ATTRIBUTES = ("colour", "size", "position")  # what a prompt may leave open (it always names the shape)
# Hidden prompts: every mix of stated and open attributes, one and two objects.
_OPEN_CASES = ("a circle", "a red circle", "a large blue square in the top left", "a small triangle",
               "a green diamond in the center", "a red circle and a large square",
               "a small yellow cross and a semicircle in the bottom right", "a triangle and a blue circle")

_STAGES = {
    "clip": ("clip", "clip text encoder", "text encoder", "m_cv", "encoder"),
    "llm": ("llm", "language model", "m_llm", "gpt-2", "gpt2"),
    "generator": ("generator", "image generator", "diffusion", "unet", "m_ig"),
}


def _stage(name: Any) -> str | None:
    text = str(name).strip().lower()
    return next((stage for stage, names in _STAGES.items() if text in names), None)


def check_pipeline_order(answer: Any) -> Feedback:
    """The three stages in the order a prompt passes through them, e.g. ``["CLIP", "LLM", "generator"]``."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        return Feedback(False, "give a list of the three stage names, e.g. ['...', '...', '...']")
    stages = [_stage(x) for x in answer]
    if None in stages:
        unknown = [x for x, s in zip(answer, stages) if s is None]
        return Feedback(False, f"unknown stage name(s) {unknown}: use CLIP, LLM and generator")
    if stages == ["clip", "llm", "generator"]:
        return Feedback(True, "prompt → CLIP embedding z → LLM description d → generator image I")
    return Feedback(False, "not this order: which stage needs the output of which? Look at the diagram again")


def check_text_intermediate(answer: Any) -> Feedback:
    """Which of ``"z"``, ``"d"``, ``"I"`` is text a person can read?"""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    text = str(answer).strip()
    if text == "d":
        return Feedback(True, "d, the description the LLM writes, is plain text; z is a vector, I an image")
    if text in ("z", "I"):
        return Feedback(False, f"{text} is not text: {'a vector of numbers' if text == 'z' else 'an image'}")
    return Feedback(False, "answer with one of 'z', 'd' or 'I'")


def check_ci_profile(answer: Any) -> Feedback:
    """The profile CI runs the notebooks at."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    text = str(answer).strip().lower()
    if text == "smoke":
        return Feedback(True, "CI runs 'smoke': it checks that the code runs, not the quality of results")
    if text in PROFILES:
        return Feedback(False, f"'{text}' would take too long for CI; which profile takes seconds?")
    return Feedback(False, f"the profiles are {', '.join(PROFILES)}")


def check_left_open(answer: Any) -> Feedback:
    """Does the learner's ``open_attributes(prompt)`` list, object by object, the attributes a prompt leaves open?

    The answer for each object is a set out of ``"colour"``, ``"size"`` and ``"position"``.
    """
    def expected(prompt: str) -> list[set[str]]:
        return [{a for a in OPEN_ATTRIBUTES if getattr(obj, a) is None} for obj in parse_prompt(prompt)]

    def problem(result: Any, want: list[set[str]], args: tuple) -> str | None:
        prompt = args[0]
        try:
            got = [set(x) for x in result]
        except TypeError:
            return f"for {prompt!r} give a list with one set per object, got {type(result).__name__}"
        if len(got) != len(want):
            return f"{prompt!r} names {len(want)} object(s), your list has {len(got)} entries"
        for g, w, obj in zip(got, want, parse_prompt(prompt)):
            if "shape" in g:
                return f"in {prompt!r} the {obj.shape} is named: a prompt never leaves the shape open"
            if g == set(OPEN_ATTRIBUTES) - w and g != w:
                return f"for the {obj.shape} of {prompt!r} you listed what is stated, not what is open"
            if g != w:
                return f"for the {obj.shape} of {prompt!r} the open attributes are {sorted(w)}, not {sorted(g)}"
        return None

    return check_function(answer, "open_attributes", [((p,), expected(p)) for p in _OPEN_CASES], problem)
