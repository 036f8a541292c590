"""Tests of the notebook-04 exercise checks: a right answer passes, a wrong one and the `...`
placeholder do not, and nothing raises on junk. Right answers come from hand arithmetic,
Monte Carlo runs of the oracle upsampler, and the model's own loss (not the logits the
check sums)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from llmimg.core.data import complete_prompt, describe
from llmimg.course.exercises import (
    Feedback,
    check_kv_cache_positions,
    check_model_probability,
    check_oracle_probability,
    check_perplexity,
    check_relation_layouts,
    check_token_count,
    oracle_probability,
)
from llmimg.course.exercises.feedback import NO_ANSWER
from llmimg.core.text import encode

JUNK = ["ten", [1, 2, 3], {"a": 1}, object(), float("nan")]


def _assert_not_yet(feedback):
    assert isinstance(feedback, Feedback) and not feedback


def _assert_missing(feedback):
    assert isinstance(feedback, Feedback) and not feedback and feedback.message == NO_ANSWER


@pytest.mark.parametrize("check, right, wrong", [
    (check_token_count, 10, 8),                     # 8 words; forgetting <bos> and <eos> gives 8
    (check_perplexity, 1.7332530178673953, 0.55),   # e^0.55; the loss itself is not the perplexity
    (check_oracle_probability, 1 / 2016, 1 / 2592), # positions drawn with replacement would give 1/2592
    (check_kv_cache_positions, (221, 21), (221, 22)),
    (check_relation_layouts, 23, 27),               # 27: any cell in a column further left
])
def test_right_wrong_missing_junk(check, right, wrong):
    assert check(right), check(right)
    _assert_not_yet(check(wrong))
    _assert_missing(check(...))
    _assert_missing(check(None))
    for junk in JUNK:
        _assert_not_yet(check(junk))


def test_answers_as_arrays_and_tensors():
    assert check_perplexity(torch.tensor(0.55, requires_grad=True).exp())
    assert check_token_count(np.int64(10))
    assert check_kv_cache_positions(np.array([221, 21]))
    assert check_kv_cache_positions(torch.tensor([221, 21]))


def test_token_count_agrees_with_the_tokenizer(smoke_llm):
    for text in ["a small green cross in the bottom right", "a red circle in the center", "a circle."]:
        n = len(smoke_llm.tokenizer(text)["input_ids"])
        assert check_token_count(n, text=text) and not check_token_count(n - 2, text=text)
    assert check_token_count(5, text="a circle.")  # the full stop is a token of its own (an unknown one)


def test_kv_cache_positions_explains_the_mistake():
    assert "swapped" in check_kv_cache_positions((21, 221)).message
    _assert_missing(check_kv_cache_positions((..., 21)))
    assert "with the cache" in check_kv_cache_positions((221, 20)).message
    # another size: 3 prefix vectors, 4 new tokens: 3 + 4 + 5 + 6 = 18 without, 3 + 3 = 6 with
    assert check_kv_cache_positions((18, 6), prefix=3, new_tokens=4)


def test_oracle_probability_by_hand():
    # one circle: 7 training colours (orange is held out), 2 sizes, 9 cells
    assert oracle_probability("a circle", "a large red circle in the center") == pytest.approx(1 / 126)
    assert oracle_probability("a circle", "a large orange circle in the center") == 0.0
    assert oracle_probability("a red circle", "a large blue circle in the center") == 0.0
    assert oracle_probability("a circle", "a large red square in the center") == 0.0
    # two identical partial objects: both assignments of prompt objects to scene objects count
    two = "a large red circle in the top left and a small white circle in the center"
    assert oracle_probability("a circle and a circle", two) == pytest.approx(2 * (1 / 14) ** 2 / 72)


@pytest.mark.parametrize("prompt, description", [
    ("a large circle in the center", "a large red circle in the center"),
    ("a red circle and a square in the top left", "a large green square in the top left and a small red circle in the center"),
])
def test_oracle_probability_matches_the_oracle_upsampler(prompt, description):
    n = 40_000
    rng = np.random.default_rng(0)
    counts = Counter(describe(complete_prompt(prompt, rng)) for _ in range(n))
    p = oracle_probability(prompt, description)
    freq = counts[description] / n
    assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n), (freq, p)


def test_model_probability(smoke_llm):
    prompt, description = "a red circle", "a large red circle in the center"
    enc = encode(smoke_llm.tokenizer, [description], check=False)
    with torch.no_grad():
        z = smoke_llm.clip.encode_text([prompt])
        loss = smoke_llm.lm(z, torch.zeros(1, dtype=torch.long), enc["input_ids"], enc["attention_mask"],
                            smoke_llm.context(prompts=[prompt]))
    n_predicted = int(enc["attention_mask"].sum()) - 1  # the words and <eos>; <bos> is given
    assert n_predicted == 8
    right = math.exp(-n_predicted * loss.item())
    feedback = check_model_probability(smoke_llm, right)
    assert feedback and "1/18" not in feedback.message and f"{1 / 18:.4g}" in feedback.message
    _assert_not_yet(check_model_probability(smoke_llm, math.exp(-loss.item())))  # one token's worth
    _assert_not_yet(check_model_probability(smoke_llm, 2 * right))
    _assert_missing(check_model_probability(smoke_llm, ...))
    for junk in JUNK:
        _assert_not_yet(check_model_probability(smoke_llm, junk))
    _assert_not_yet(check_model_probability(None, 0.5))  # no model: a "not yet", not a traceback


@pytest.mark.parametrize("relation, words", [("left of", "to the left of"), ("right of", "to the right of"),
                                             ("above", "above"), ("below", "below")])
def test_relation_layouts_agree_with_the_planner(relation, words):
    from llmimg.core.data.geneval.layout import placements

    n = len(placements(f"a red circle {words} a blue square"))
    assert n == 23
    assert check_relation_layouts(n, relation=relation) and not check_relation_layouts(n + 4, relation=relation)
