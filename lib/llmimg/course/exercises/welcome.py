"""Checks for notebook 00 (welcome): the pipeline's shape and the profiles."""

from __future__ import annotations

from typing import Any

from llmimg.core.config import PROFILES
from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, is_unanswered

__all__ = ["check_pipeline_order", "check_text_intermediate", "check_ci_profile"]

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
