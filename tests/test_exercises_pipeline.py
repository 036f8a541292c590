"""The checks of notebook 06's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pytest
from grading import assert_grades

from llmimg.exercises import check_latency_at_steps, check_speedup, check_standard_error


@pytest.mark.parametrize("check, right, wrong", [
    (lambda a: check_latency_at_steps(120.0, 30.0, 25, a), 870.0, 750.0),
    (lambda a: check_speedup(250.0, 3.2, a), 78.125, 246.8),
    (lambda a: check_standard_error(0.15, 200, a), 0.02525, 0.15 / 200),
])
def test_checks(check, right, wrong):
    assert_grades(check, right, wrong)


def test_bad_exercise_parameters_are_refused():
    with pytest.raises(ValueError):
        check_latency_at_steps(1.0, 1.0, 0, 1.0)
    with pytest.raises(ValueError):
        check_speedup(0.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        check_standard_error(1.5, 10, 0.1)
