"""Tests of the notebook-03 exercise checks: a right answer passes, a wrong one and the `...`
placeholder do not, and nothing raises on junk. Right answers are computed here independently
(torch cross-entropy on explicit logit matrices, and the trained smoke CLIP's own similarities)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmimg.course.exercises import (
    EXERCISE_SIMILARITIES,
    Feedback,
    check_clip_loss,
    check_loss_floor,
    check_retrieving_prompt,
    check_uniform_loss,
)
from llmimg.course.exercises.feedback import NO_ANSWER

JUNK = ["0.5", None, [1.0, 2.0], {"a": 1}, object()]


def _symmetric_loss(logits: torch.Tensor) -> float:
    labels = torch.arange(len(logits))
    return float((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)


def _uniform(batch_size: int) -> float:
    return _symmetric_loss(torch.full((batch_size, batch_size), 3.7))  # any constant logit


def _floor(batch_size: int, temperature: float) -> float:
    return _symmetric_loss(torch.eye(batch_size, dtype=torch.float64) / temperature)  # cosines: 1 on, 0 off


def _exercise_loss(temperature: float) -> float:
    return _symmetric_loss(torch.tensor(EXERCISE_SIMILARITIES, dtype=torch.float64) / temperature)


S = EXERCISE_SIMILARITIES
CASES = [  # (check with its problem bound, right answer, wrong answer)
    (lambda a: check_uniform_loss(a, batch_size=256), _uniform(256), math.log(255)),
    (lambda a: check_uniform_loss(a, batch_size=32), _uniform(32), _uniform(256)),
    (lambda a: check_clip_loss(S, 0.5, a), _exercise_loss(0.5), _exercise_loss(0.25)),
    (lambda a: check_loss_floor(a), _floor(128, 1.0), math.log(128)),
    (lambda a: check_loss_floor(a, batch_size=16, temperature=0.5), _floor(16, 0.5), _floor(16, 1.0)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_right_wrong_missing_junk(case):
    check, right, wrong = CASES[case]
    fb = check(right)
    assert isinstance(fb, Feedback) and fb.ok, fb
    assert check(np.float32(right)).ok and check(torch.tensor(right)).ok  # numpy and torch scalars count
    fb = check(wrong)
    assert isinstance(fb, Feedback) and not fb.ok and fb.message
    assert check(...).message == NO_ANSWER and not check(...).ok
    for junk in JUNK:
        fb = check(junk)
        assert isinstance(fb, Feedback) and not fb.ok and fb.message, junk


def test_uniform_loss_names_common_mistakes():
    assert "natural log" in check_uniform_loss(math.log2(256)).message
    assert "-log" in check_uniform_loss(1 / 256).message


def test_clip_loss_names_common_mistakes():
    logits = torch.tensor(S, dtype=torch.float64) / 0.5
    labels = torch.arange(3)
    one_way = float(F.cross_entropy(logits, labels))
    assert not check_clip_loss(S, 0.5, one_way).ok
    assert "one direction" in check_clip_loss(S, 0.5, one_way).message
    assert "one direction" in check_clip_loss(S, 0.5, float(F.cross_entropy(logits.T, labels))).message
    assert "temperature" in check_clip_loss(S, 0.5, _exercise_loss(1.0)).message
    assert "divide" in check_clip_loss(S, 0.5, _exercise_loss(2.0)).message


def test_clip_loss_with_a_broken_problem_does_not_raise():
    for similarities, temperature in [("junk", 0.5), (np.ones((2, 3)), 0.5), (S, 0.0), (S, "x"), (S, None)]:
        fb = check_clip_loss(similarities, temperature, 1.0)
        assert isinstance(fb, Feedback) and not fb.ok and "square" in fb.message


def test_clip_loss_on_other_matrices():
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (5, 5))
    right = _symmetric_loss(torch.from_numpy(s) / 0.07)
    assert check_clip_loss(s, 0.07, right).ok and check_clip_loss(s.tolist(), 0.07, right).ok
    assert not check_clip_loss(s, 0.07, right * 1.01).ok


def test_retrieving_prompt(smoke_clip):
    from llmimg.core.data import ShapesWorld

    images = np.stack([s.image for s in ShapesWorld(seed=0).samples(8, "val")])
    prompts = ["a circle", "a red square", "a large triangle in the top left", "a small white cross in the center"]
    # Which image each prompt retrieves, computed here from the raw open_clip model.
    ids = smoke_clip.tokens(prompts)
    with torch.no_grad():
        text = F.normalize(smoke_clip.model.encode_text(ids), dim=-1)
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # CLIP's [-1, 1] input
        image = F.normalize(smoke_clip.model.encode_image(x), dim=-1)
    first = (text @ image.T).argmax(1).tolist()
    for prompt, k in zip(prompts, first):
        fb = check_retrieving_prompt(smoke_clip, images, k, prompt)
        assert fb.ok, fb
        wrong = (k + 1) % len(images)
        fb = check_retrieving_prompt(smoke_clip, images, wrong, prompt)
        assert not fb.ok and f"image {wrong} is ranked" in fb.message
    assert check_retrieving_prompt(smoke_clip, list(images), first[0], prompts[0]).ok  # a list of images works
    assert check_retrieving_prompt(smoke_clip, images, 0, ...).message == NO_ANSWER
    assert "cannot read" in check_retrieving_prompt(smoke_clip, images, 0, "a magenta circle").message
    assert "cannot read" in check_retrieving_prompt(smoke_clip, images, 0, "   ").message
    assert "no image" in check_retrieving_prompt(smoke_clip, images, 8, prompts[0]).message
    assert "not usable" in check_retrieving_prompt(smoke_clip, "junk", 0, prompts[0]).message
    for junk in [None, 3, ["a circle"]]:
        fb = check_retrieving_prompt(smoke_clip, images, 0, junk)
        assert isinstance(fb, Feedback) and not fb.ok and fb.message
