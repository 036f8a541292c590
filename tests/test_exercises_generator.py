"""The checks of notebook 05's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pytest
from grading import assert_grades

from llmimg.course.exercises import check_all_correct, check_guided_noise, check_latent_shape, check_signal_fraction


@pytest.mark.parametrize("check, right, wrong", [
    (lambda a: check_signal_fraction(0.64, a), 0.64, 0.8),
    (lambda a: check_guided_noise([0.1, -0.2], [0.3, 0.1], 3.0, a), [0.7, 0.7], [0.3, 0.1]),
    (lambda a: check_latent_shape(8, a), (192, 4, 4), (3, 4, 4)),
    (lambda a: check_all_correct([[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]], a), 2 / 3, 11 / 12),
])
def test_checks(check, right, wrong):
    assert_grades(check, right, wrong)
