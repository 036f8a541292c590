"""The checks of notebook 06's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pytest
from grading import assert_grades

from llmimg.course.exercises import check_latency_at_steps, check_speedup, check_standard_error


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


def test_upsampling_gains_are_read_from_the_table():
    import pandas as pd

    from llmimg.course.exercises import check_upsampling_gains

    table = pd.DataFrame([{"trained on": "descriptions", "drawn from": "raw prompt", "overall": 0.40},
                          {"trained on": "descriptions", "drawn from": "LLM description", "overall": 0.80},
                          {"trained on": "prompts", "drawn from": "raw prompt", "overall": 0.35},
                          {"trained on": "prompts", "drawn from": "LLM description", "overall": 0.30}])
    right = {"descriptions": 40.0, "prompts": -5.0}
    assert_grades(lambda a: check_upsampling_gains(table, a), right, {"descriptions": 40.0, "prompts": 5.0})
    assert "descriptions most" in check_upsampling_gains(table, right).message
    assert "sign is flipped" in check_upsampling_gains(table, {"descriptions": -40.0, "prompts": 5.0}).message
    assert "points (×100)" in check_upsampling_gains(table, {"descriptions": 0.4, "prompts": -5.0}).message
    assert "keys" in check_upsampling_gains(table, {"descriptions": 40.0}).message
    assert "number" in check_upsampling_gains(table, {"descriptions": "lots", "prompts": 1}).message


def test_why_the_prompt_generator_gains_little():
    from llmimg.course.exercises import check_why_prompt_generator_gains_little as check

    assert_grades(check, "a", "b")
    assert check("(A)") and not check("c") and not check("d")
    assert "one letter" in check("e").message
