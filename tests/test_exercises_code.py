"""The exercises where the learner writes a function: right code passes, typical mistakes get a specific hint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmimg.core.data import parse_prompt
from llmimg.course.exercises import (check_add_noise, check_contrastive_loss, check_ddim_step, check_describe_object,
                              check_left_of, check_left_open, check_lm_loss, check_run_pipeline)
from llmimg.course.exercises.feedback import NO_ANSWER


def unanswered(*args):
    ...


CHECKS = [check_add_noise, check_describe_object, check_contrastive_loss, check_lm_loss, check_ddim_step,
          check_run_pipeline, check_left_open, check_left_of]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_unanswered_missing_and_junk(check):
    for answer in (..., unanswered):
        assert check(answer).message == NO_ANSWER
    assert "should be your function" in check("seven").message
    crash = check(lambda *args: 1 / 0)
    assert not crash.ok and "raised ZeroDivisionError" in crash.message


def test_open_attributes():
    def open_attributes(prompt, attributes=("colour", "size", "position"), keep=lambda v: v is None):
        return [{a for a in attributes if keep(getattr(obj, a))} for obj in parse_prompt(prompt)]

    assert check_left_open(open_attributes).ok
    assert check_left_open(lambda p: [tuple(s) for s in open_attributes(p)]).ok  # any collection of names
    assert "what is stated" in check_left_open(lambda p: open_attributes(p, keep=lambda v: v is not None)).message
    assert "never leaves the shape open" in check_left_open(
        lambda p: open_attributes(p, ("shape", "colour", "size", "position"), lambda v: v in (None, "circle"))).message
    assert "names 2 object(s)" in check_left_open(lambda p: open_attributes(p)[:1]).message
    assert "one set per object" in check_left_open(lambda p: 3).message
    assert not check_left_open(lambda p: [{"colour"} for _ in parse_prompt(p)]).ok


def test_left_of():
    assert check_left_of(lambda a, b: b[1] > a[1] and 3 * (b[1] - a[1]) ** 2 > (b[0] - a[0]) ** 2).ok
    assert check_left_of(lambda a, b: bool(np.hypot(*np.subtract(a, b)) * 0.5 < b[1] - a[1])).ok
    assert "is not within 60°" in check_left_of(lambda a, b: a[1] < b[1]).message  # a knight's move too
    assert "points left" in check_left_of(lambda a, b: a[0] == b[0] and a[1] < b[1]).message  # diagonals missed
    assert "True or False" in check_left_of(lambda a, b: "yes").message


def test_add_noise():
    assert check_add_noise(lambda x0, eps, a: np.sqrt(a) * x0 + np.sqrt(1 - a) * eps).ok
    assert check_add_noise(lambda x0, eps, a: torch.tensor(a).sqrt() * torch.tensor(x0)
                           + torch.tensor(1 - a).sqrt() * torch.tensor(eps)).ok
    assert "square roots" in check_add_noise(lambda x0, eps, a: a * x0 + (1 - a) * eps).message
    assert not check_add_noise(lambda x0, eps, a: np.sqrt(a) * eps + np.sqrt(1 - a) * x0).ok


def test_describe_object():
    assert check_describe_object(lambda shape, colour, size, position: f"a {size} {colour} {shape} in the {position}").ok
    order = check_describe_object(lambda shape, colour, size, position: f"a {colour} {size} {shape} in the {position}")
    assert "not in order" in order.message
    assert not check_describe_object(lambda *args: 7).ok


def test_contrastive_loss():
    def right(image, text, temperature):
        image, text = F.normalize(torch.tensor(image), dim=1), F.normalize(torch.tensor(text), dim=1)
        logits, labels = image @ text.T / temperature, torch.arange(len(image))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def one_way(image, text, temperature):
        image, text = F.normalize(torch.tensor(image), dim=1), F.normalize(torch.tensor(text), dim=1)
        return F.cross_entropy(image @ text.T / temperature, torch.arange(len(image)))

    def raw(image, text, temperature):
        logits, labels = torch.tensor(image) @ torch.tensor(text).T / temperature, torch.arange(len(image))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    assert check_contrastive_loss(right).ok
    assert "one direction only" in check_contrastive_loss(one_way).message
    assert "raw embeddings" in check_contrastive_loss(raw).message


def test_lm_loss():
    def per_token(logits, targets):
        return F.cross_entropy(torch.tensor(logits).flatten(0, 1), torch.tensor(targets).flatten(),
                               reduction="none").view(targets.shape)

    def right(logits, targets, mask):
        m = torch.tensor(mask, dtype=torch.float64)
        return (per_token(logits, targets) * m).sum() / m.sum()

    def with_padding(logits, targets, mask):
        return per_token(logits, targets).mean()

    def per_sequence(logits, targets, mask):
        m = torch.tensor(mask, dtype=torch.float64)
        return ((per_token(logits, targets) * m).sum(1) / m.sum(1)).mean()

    assert check_lm_loss(right).ok
    assert "padding too" in check_lm_loss(with_padding).message
    assert "per sequence" in check_lm_loss(per_sequence).message


def test_ddim_step():
    def right(x_t, eps, a_t, a_prev):
        x0 = (x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps

    assert check_ddim_step(right).ok
    assert "clean-image estimate" in check_ddim_step(lambda x_t, eps, a_t, a_prev: (
        x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)).message
    assert not check_ddim_step(lambda x_t, eps, a_t, a_prev: x_t).ok


def test_run_pipeline():
    def right(prompt, encode, write, draw, use_llm):
        return draw(write(encode(prompt), prompt)) if use_llm else draw(prompt)

    assert check_run_pipeline(right).ok
    ignores_switch = check_run_pipeline(lambda prompt, encode, write, draw, use_llm: draw(write(encode(prompt), prompt)))
    assert "without the LLM" in ignores_switch.message
    draws_embedding = check_run_pipeline(lambda prompt, encode, write, draw, use_llm: draw(encode(prompt)))
    assert not draws_embedding.ok and "with the LLM" in draws_embedding.message
