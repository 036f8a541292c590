"""The ``check_...`` helpers of notebooks 00 and 02: right answers pass, wrong and missing ones do not."""

from __future__ import annotations

import numpy as np

from llmimg.core.data import COLOUR_NAMES, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES, ShapesWorld, describe
from llmimg.course.exercises import (
    Feedback,
    check_ci_profile,
    check_description_of,
    check_full_prompt_probability,
    check_open_attributes,
    check_pipeline_order,
    check_relation_placements,
    check_single_object_scene_count,
    check_text_intermediate,
)
from llmimg.course.exercises.feedback import check_array, check_number


def _right_wrong_missing(check, right, wrong):
    assert check(right).ok, check(right)
    assert not check(wrong).ok
    missing = check(...)
    assert not missing.ok and "no answer yet" in missing.message


def test_feedback_reads_as_a_verdict():
    assert repr(Feedback(True, "fine")) == "✓ correct: fine"
    assert not Feedback(False, "x") and "not yet" in Feedback(False, "x")._repr_markdown_()
    assert check_number(np.float32(0.5), 0.5).ok and not check_number("abc", 0.5).ok
    assert check_array([[1, 2]], np.array([[1.0, 2.0]])).ok
    assert "shape" in check_array([1, 2], np.zeros(3)).message


def test_welcome_checks():
    _right_wrong_missing(check_pipeline_order, ["CLIP", "LLM", "generator"], ["LLM", "CLIP", "generator"])
    assert check_pipeline_order(["clip text encoder", "language model", "diffusion"]).ok
    assert "unknown stage" in check_pipeline_order(["clip", "vae", "generator"]).message
    _right_wrong_missing(check_text_intermediate, "d", "z")
    _right_wrong_missing(check_ci_profile, "smoke", "full")


def test_shapes_world_checks():
    # An independent count by enumeration of the training distribution.
    heldout = set(HELDOUT_PAIRS)
    count = sum((c, s) not in heldout for s in SHAPES for c in COLOUR_NAMES for _ in SIZES for _ in POSITIONS)
    _right_wrong_missing(check_single_object_scene_count, count, count + 6)
    # "left of" counted from the angle itself: within 60 degrees of pointing left (9 of the 72 pairs are two columns
    # apart, 14 are one column apart and at most one row).
    grid = [(r, c) for r in range(3) for c in range(3)]
    left = sum(np.degrees(np.arctan2(ra - rb, cb - ca)) ** 2 < 60**2 - 1e-9
               for ra, ca in grid for rb, cb in grid if (ra, ca) != (rb, cb))
    assert left == 23
    _right_wrong_missing(check_relation_placements, left, 24)
    prompt = "a red circle and a square in the top left"
    _right_wrong_missing(lambda a: check_open_attributes(prompt, a), 4, 3)
    _right_wrong_missing(check_full_prompt_probability, 0.125, 0.5)
    world = ShapesWorld()
    right = describe(world.scene(5))
    _right_wrong_missing(lambda a: check_description_of(5, a), right, describe(world.scene(6)))
    assert "not a valid description" in check_description_of(5, "a blue thing").message
