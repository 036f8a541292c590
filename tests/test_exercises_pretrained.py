"""The checks of notebook 09's exercises: right, wrong, missing and junk answers, and the learner's own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from grading import assert_grades

from llmimg.course.exercises import check_clip_score, check_denoise_share, check_rerank


@pytest.mark.parametrize("check, right, wrong", [
    (lambda a: check_clip_score(0.31, a), 31.0, 0.31),
    (lambda a: check_clip_score(-0.2, a), 0.0, -20.0),
    (lambda a: check_denoise_share(300.0, 50.0, 4, a), 0.4, 0.25),
])
def test_number_checks(check, right, wrong):
    assert_grades(check, right, wrong)


def cosine_rerank(z_prompt, z_candidates):
    z_prompt = z_prompt / np.linalg.norm(z_prompt)
    z_candidates = z_candidates / np.linalg.norm(z_candidates, axis=1, keepdims=True)
    return int(np.argmax(z_candidates @ z_prompt))


def test_rerank_accepts_the_cosine_and_torch_answers():
    assert check_rerank(cosine_rerank).ok

    def in_torch(z_prompt, z_candidates):
        sims = torch.nn.functional.cosine_similarity(torch.tensor(z_candidates), torch.tensor(z_prompt)[None], dim=1)
        return sims.argmax()  # a 0-d tensor is an index too
    assert check_rerank(in_torch).ok


@pytest.mark.parametrize("answer, message", [
    (lambda p, c: int(np.argmax(c @ p)), "divide by their norms"),  # the dot product: lengths matter
    (lambda p, c: int(np.argmin(c @ p)), "has the largest cosine similarity"),
    (lambda p, c: 1 / 0, "raised ZeroDivisionError"),
    (lambda p, c: [0, 1], "one whole number"),
    (lambda p, c: 0.5, "one whole number"),
    (42, "should be your function"),
    (..., "no answer yet"),
    (lambda p, c: None, "no answer yet"),  # a function whose body is still `...`
])
def test_rerank_explains_what_is_wrong(answer, message):
    feedback = check_rerank(answer)
    assert not feedback.ok and message in feedback.message


def test_bad_exercise_parameters_are_refused():
    with pytest.raises(ValueError):
        check_clip_score(1.5, 1.0)
    with pytest.raises(ValueError):
        check_denoise_share(10.0, 0.0, 4, 0.5)


def test_best_of_n():
    from llmimg.course.exercises import check_best_of_n

    assert_grades(lambda answer: check_best_of_n(0.3, 4, answer), 1 - 0.7**4, 0.3**4)
    assert "one faithful candidate is enough" in check_best_of_n(0.3, 4, 0.3**4).message
    assert "complement" in check_best_of_n(0.3, 4, 0.5).message
    with pytest.raises(ValueError):
        check_best_of_n(1.5, 4, 0.5)
