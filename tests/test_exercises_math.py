"""Tests of the notebook-01 exercise checks: a right answer passes, a wrong one and the
`...` placeholder do not, and nothing raises. Right answers are computed here
independently (diffusers' scheduler, hand arithmetic, explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmimg.course.exercises import (
    Feedback,
    check_alpha_bar,
    check_bigram_perplexity,
    check_elbo_weight,
    check_infonce_limit,
    check_pipeline_marginal,
)
from llmimg.course.theory import pipeline


@pytest.fixture(scope="module")
def scheduler_arrays():
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDPMScheduler()
    return s.betas.double().numpy(), s.alphas_cumprod.double().numpy()


def _pipeline_marginal_by_loops(prompt: int) -> np.ndarray:
    toy = pipeline.pipeline_toy()
    z = toy.embeddings[prompt]
    logits = [sum(w * zz for w, zz in zip(row, z)) + b for row, b in zip(toy.llm_weights, toy.llm_bias)]
    norm = sum(math.exp(v) for v in logits)
    p_d = [math.exp(v) / norm for v in logits]
    return np.array([sum(p_d[d] * toy.image_given_description[d][i] for d in range(len(p_d)))
                     for i in range(len(toy.images))])


def _right_and_wrong(scheduler_arrays):
    betas, ab = scheduler_arrays
    t = 100
    var = betas[t] * (1 - ab[t - 1]) / (1 - ab[t])
    w = betas[t] ** 2 / (2 * var * (1 - betas[t]) * (1 - ab[t]))
    ppl = (0.8 * 0.45 * 0.5 * 0.6) ** (-1 / 4)
    marg = _pipeline_marginal_by_loops(1)
    return [
        (check_alpha_bar, ab[500], ab[499]),          # off by one factor
        (check_infonce_limit, 4.852030263919617, math.log2(128)),  # log base 2 is wrong
        (check_elbo_weight, w, w * 2),
        (check_pipeline_marginal, marg, marg[::-1]),
        (check_bigram_perplexity, ppl, (0.8 * 0.45 * 0.5) ** (-1 / 3)),  # forgot <eos>
    ]


def test_right_answers_pass(scheduler_arrays):
    for check, right, _ in _right_and_wrong(scheduler_arrays):
        fb = check(right)
        assert isinstance(fb, Feedback)
        assert fb.ok, (check.__name__, fb)


def test_wrong_answers_fail_without_raising(scheduler_arrays):
    for check, _, wrong in _right_and_wrong(scheduler_arrays):
        fb = check(wrong)
        assert isinstance(fb, Feedback) and not fb.ok, (check.__name__, fb)


@pytest.mark.parametrize("bad", [..., None, "0.5", [1.0, 2.0], {"a": 1}])
@pytest.mark.parametrize("check", [check_alpha_bar, check_infonce_limit, check_elbo_weight,
                                   check_pipeline_marginal, check_bigram_perplexity])
def test_placeholders_and_bad_types_fail_without_raising(check, bad):
    fb = check(bad)
    assert isinstance(fb, Feedback)
    assert not fb.ok
    assert fb.message
    if bad is ...:
        assert "no answer" in fb.message


def test_checks_accept_other_arguments():
    assert check_infonce_limit(math.log(64), batch_size=64)
    assert check_bigram_perplexity((0.1 * 0.5 * 0.6) ** (-1 / 3), words=("red", "circle"))
    assert check_pipeline_marginal(_pipeline_marginal_by_loops(0), prompt=0)
    assert not check_pipeline_marginal([0.2, 0.2, 0.2])  # does not sum to one
    assert "sum to" in check_pipeline_marginal([0.2, 0.2, 0.2]).message


def test_the_alpha_bar_check_answers_the_second_question_too(scheduler_arrays):
    _, ab = scheduler_arrays
    message = check_alpha_bar(ab[500]).message
    assert f"√ᾱ_500 = {ab[500] ** 0.5:.3f}" in message and f"√(1 − ᾱ_500) = {(1 - ab[500]) ** 0.5:.3f}" in message
