"""The checks of notebook 07's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pandas as pd
import torch
from grading import assert_grades

from llmimg.course.exercises import (check_leave_one_out_loss, check_regime_difference, check_reinforce_loss,
                                     check_step_log_prob, check_straight_through)


def right_reinforce(rewards, nll):
    return ((rewards - rewards.mean()) * nll).mean()


def test_reinforce_loss_is_graded_and_its_mistakes_named():
    assert_grades(check_reinforce_loss, right_reinforce, lambda r, n: (r * n).mean())
    assert "baseline" in check_reinforce_loss(lambda r, n: (r * n).mean()).message
    assert "sign" in check_reinforce_loss(lambda r, n: -right_reinforce(r, n)).message
    assert "mean over the batch" in check_reinforce_loss(lambda r, n: ((r - r.mean()) * n).sum()).message
    # Right values that train nothing: the gradient is graded too, dL/dnll = (r - mean r) / B.
    assert "no gradient" in check_reinforce_loss(lambda r, n: ((r - r.mean()) * n.detach()).mean()).message
    assert "no gradient" in check_reinforce_loss(lambda r, n: torch.tensor(right_reinforce(r, n).item())).message
    cut = check_reinforce_loss(lambda r, n: right_reinforce(r, n).detach() + 0 * n.sum())
    assert not cut.ok and "cut from the graph" in cut.message


def right_rloo(rewards, log_probs):
    baseline = (rewards.sum() - rewards) / (len(rewards) - 1)
    return -((rewards - baseline) * log_probs).mean()


def test_leave_one_out_loss_is_graded_by_its_gradient():
    assert_grades(check_leave_one_out_loss, right_rloo, lambda r, lp: -((r - r.mean()) * lp).mean())
    assert "mean of the others" in check_leave_one_out_loss(lambda r, lp: -((r - r.mean()) * lp).mean()).message
    assert "sign" in check_leave_one_out_loss(lambda r, lp: -right_rloo(r, lp)).message
    assert "no baseline" in check_leave_one_out_loss(lambda r, lp: -(r * lp).mean()).message
    assert "no gradient" in check_leave_one_out_loss(lambda r, lp: right_rloo(r, lp.detach())).message

    def baseline_with_gradient(r, lp):  # right value, but the baseline is built from log_probs' graph
        return right_rloo(r, lp) + 0.1 * (lp - lp.detach()).sum()

    assert "baseline must not carry gradient" in check_leave_one_out_loss(baseline_with_gradient).message


def test_step_log_prob_is_the_librarys_and_graded_by_its_gradient():
    import math

    from llmimg.research.joint.policy import log_prob

    assert check_step_log_prob(log_prob).ok
    assert "sum over" in check_step_log_prob(lambda x, m, s: log_prob(x, m, s) * x[0].numel()).message
    assert "constant is missing" in check_step_log_prob(lambda x, m, s: log_prob(x, m, s) + math.log(s)).message
    assert "no gradient" in check_step_log_prob(lambda x, m, s: log_prob(x, m.detach(), s)).message
    assert "one log-probability per row" in check_step_log_prob(lambda x, m, s: log_prob(x, m, s).sum()).message
    assert "raised" in check_step_log_prob(lambda x, m, s: 1 / 0).message


def right_straight_through(token, logits):
    p = logits.softmax(-1)
    return torch.nn.functional.one_hot(torch.tensor(token), len(logits)).float() + p - p.detach()


def test_straight_through_is_graded_by_its_value_and_its_gradient():
    from llmimg.research.joint.coupled import straight_through

    onehot = lambda t, lg: torch.nn.functional.one_hot(torch.tensor(t), len(lg)).float()  # noqa: E731
    assert_grades(check_straight_through, right_straight_through, onehot)
    library = lambda t, lg: straight_through(torch.tensor([[1, t]]), lg[None, None], torch.ones(1, 2))[0, 1]  # noqa
    assert check_straight_through(library).ok  # the library's, at κ = 1
    assert "no gradient" in check_straight_through(onehot).message
    assert "softmax itself" in check_straight_through(lambda t, lg: lg.softmax(-1)).message
    assert "not softmax's" in check_straight_through(lambda t, lg: onehot(t, lg) + lg - lg.detach()).message
    assert "one row" in check_straight_through(lambda t, lg: torch.zeros(2)).message


def test_the_difference_is_read_off_the_table():
    table = pd.DataFrame({"heldout": [0.80, 0.75], "heldout_se": [0.02, 0.02]}, index=["joint_rl", "separate"])
    check = lambda a: check_regime_difference(table, a)  # noqa: E731
    assert_grades(check, 0.05, 0.5)
    assert "points" in check(5.0).message
    assert "separate minus joint_rl" in check(-0.05).message
    assert "within the noise" in check(0.05).message
