"""The checks of notebook 08's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pytest
from grading import assert_grades

from llmimg.course.exercises import check_amdahl, check_conv_flops, check_count_forced, check_llm_share, check_mfu
from llmimg.stages.llm.constrained import DescriptionAutomaton


@pytest.mark.parametrize("check, right, wrong", [
    (lambda a: check_mfu(2e9, 0.5, 20.0, a), 0.2, 0.4),
    (lambda a: check_amdahl(0.8, 10.0, a), 1 / 0.28, 8.0),
    (lambda a: check_llm_share({"llm_generate": 30.0, "total": 40.0}, a), 0.75, 0.5),
])
def test_checks(check, right, wrong):
    assert_grades(check, right, wrong)


def test_shares_given_in_per_cent_are_told_so():
    assert "per cent" in check_mfu(2e9, 0.5, 20.0, 20.0).message
    assert "per cent" in check_llm_share({"llm_generate": 30.0, "total": 40.0}, 75).message


def test_bad_exercise_parameters_are_refused():
    with pytest.raises(ValueError):
        check_mfu(1.0, 0.0, 1.0, 0.1)
    with pytest.raises(ValueError):
        check_amdahl(1.5, 2.0, 1.0)


def right_conv_flops(c_in, c_out, k, h, w):
    return 2 * c_in * c_out * k * k * h * w


def test_conv_flops_grades_the_count_against_torchs_counter():
    assert_grades(check_conv_flops, right_conv_flops, lambda c_in, c_out, k, h, w: c_in * c_out * k * k * h * w)
    macs = check_conv_flops(lambda c_in, c_out, k, h, w: c_in * c_out * k * k * h * w)
    assert "multiply-add" in macs.message
    window = check_conv_flops(lambda c_in, c_out, k, h, w: 2 * c_in * c_out * h * w)
    assert not window.ok and "k × k" in window.message
    assert not check_conv_flops(lambda *a: 1 / 0).ok  # an error in the learner's code is feedback


def right_count_forced(prompt, description):
    automaton, forced = DescriptionAutomaton(prompt), 0
    for word in [*description.split(), "<eos>"]:
        forced += len(automaton.allowed()) == 1
        automaton.advance(word)
    return forced


def test_count_forced_grades_the_count_against_the_automaton():
    assert right_count_forced("a red circle in the top left", "a large red circle in the top left") == 8  # by hand
    assert_grades(check_count_forced, right_count_forced, lambda p, d: right_count_forced(p, d) + 1)
    no_eos = check_count_forced(lambda p, d: right_count_forced(p, d) - 1)
    assert not no_eos.ok and "<eos>" in no_eos.message
    assert not check_count_forced(lambda p, d: (right_count_forced(p, d), 9)).ok
