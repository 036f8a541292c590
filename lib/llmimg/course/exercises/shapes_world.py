"""Checks for notebook 02 (ShapesWorld): counting scenes, reading prompts, the split."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmimg.core.data.captions import ParseError, describe, parse_description, parse_prompt
from llmimg.core.data.geneval import cell_of, placements, relation_holds
from llmimg.core.data.shapes_world import ShapesWorld
from llmimg.core.data.world import COLOUR_NAMES, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject
from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, check_function, check_number, is_unanswered

__all__ = ["check_describe_object", "check_single_object_scene_count", "check_open_attributes",
           "check_full_prompt_probability", "check_description_of", "check_relation_placements", "check_left_of"]


def check_single_object_scene_count(answer: Any) -> Feedback:
    """How many distinct one-object scenes can the *training* split hold?"""
    pairs = len(SHAPES) * len(COLOUR_NAMES) - len(HELDOUT_PAIRS)
    expected = pairs * len(SIZES) * len(POSITIONS)
    return check_number(answer, expected, rtol=0, atol=0.5, what="the number of one-object training scenes",
                        hint="multiply the allowed colour–shape pairs by the sizes and the positions")


def check_open_attributes(prompt: str, answer: Any) -> Feedback:
    """How many attributes does ``prompt`` leave open (for the LLM to fill in)?"""
    open_count = sum(4 - p.n_stated for p in parse_prompt(prompt))
    return check_number(answer, open_count, rtol=0, atol=0.5, what="the number of open attributes",
                        hint="each object has 4 attributes: shape, colour, size and position")


def check_full_prompt_probability(answer: Any, prompt_keep: float = 0.5) -> Feedback:
    """Probability that a one-object scene's prompt states all its attributes."""
    return check_number(answer, prompt_keep**3, what="the probability",
                        hint="the shape is always stated; the other three each with probability prompt_keep")


def check_description_of(index: int, answer: Any, world: ShapesWorld | None = None) -> Feedback:
    """Does ``answer`` describe training scene ``index`` completely and correctly?"""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    scene = (world or ShapesWorld()).scene(index)
    try:
        parsed = parse_description(str(answer))
    except ParseError as err:
        return Feedback(False, f"this is not a valid description: {err}")
    if parsed == scene:
        return Feedback(True, "the description matches the scene exactly")
    wrong = len(set(parsed.objects) ^ set(scene.objects))
    return Feedback(False, f"valid, but {wrong} object(s) differ from the scene in some attribute")


def check_describe_object(answer: Any, n_cases: int = 12, seed: int = 0) -> Feedback:
    """Does the learner's ``describe_object(shape, colour, size, position)`` write ShapesWorld's description?

    Compared with :func:`llmimg.core.data.describe` of a one-object scene, on random objects.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(COLOUR_NAMES))
        size, position = str(rng.choice(SIZES)), str(rng.choice(POSITIONS))
        cases.append(((shape, colour, size, position), describe(Scene((ShapeObject(position, shape, colour, size),)))))

    def problem(result: Any, expected: str, args: tuple) -> str | None:
        if not isinstance(result, str):
            return f"`describe_object` should return a string, got {type(result).__name__}"
        if result.strip() == expected:
            return None
        if sorted(result.split()) == sorted(expected.split()):
            return f"the words are right but not in order: {result!r}, expected {expected!r}"
        return f"`describe_object{args}` gave {result!r}, expected {expected!r}"

    return check_function(answer, "describe_object", cases, problem)


def check_relation_placements(answer: Any, prompt: str = "a circle to the left of a square") -> Feedback:
    """In how many ways (circle's cell, square's cell) can ``prompt``'s relation hold on the 3×3 grid?"""
    return check_number(answer, len(placements(prompt)), rtol=0, atol=0.5, what="the number of placements",
                        hint="count column offsets of one and of two separately; a knight's move (one column, "
                             "two rows) is outside the 60° cone")


def check_left_of(answer: Any) -> Feedback:
    """Does the learner's ``left_of(a, b)`` (cells as (row, column)) follow GenEval's 60° rule on every pair?"""
    cases = [((cell_of(a), cell_of(b)), relation_holds("left of", a, b))
             for a in POSITIONS for b in POSITIONS if a != b]

    def problem(result: Any, expected: bool, args: tuple) -> str | None:
        if not isinstance(result, (bool, np.bool_)):
            return f"`left_of` should return True or False, got {type(result).__name__}"
        if bool(result) == expected:
            return None
        (ra, ca), (rb, cb) = args
        offset = f"(rows {ra - rb:+d}, columns {ca - cb:+d})"
        if expected:
            return f"`left_of{args}` gave False, but the offset {offset} points left within 60° of the horizontal"
        return f"`left_of{args}` gave True, but the offset {offset} is not within 60° of pointing left"

    return check_function(answer, "left_of", cases, problem)
