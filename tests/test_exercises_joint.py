"""The checks of notebook 07's exercises: right, wrong, missing and junk answers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from grading import assert_grades

from llmimg.course.exercises import check_joint_loss, check_regime_difference, check_reinforce_loss


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


@pytest.fixture(scope="module")
def model_and_batch(smoke_llm):
    from llmimg.research import joint

    config = joint.default_config("smoke", "joint")
    begin = joint.start("smoke", progress=False)
    return joint.JointModel(config, begin), joint.JointData(config, begin).batch(0)


def right_joint_loss(model, batch, lam):
    lm = model.lm(batch["z"], batch["task"], batch["input_ids"], batch["attention_mask"], batch["context"])
    return model.denoising(batch)[0] + lam * lm


def test_joint_loss_is_graded_on_the_real_model(model_and_batch):
    model, batch = model_and_batch
    check = lambda f: check_joint_loss(f, model, batch)  # noqa: E731
    assert_grades(check, right_joint_loss, lambda m, b, lam: m.denoising(b)[0])
    assert "LLM's term is missing" in check(lambda m, b, lam: m.denoising(b)[0]).message
    assert "not applied" in check(lambda m, b, lam: right_joint_loss(m, b, 1.0)).message
    # Right values that train nothing, or train only the generator.
    assert "no gradient" in check(lambda m, b, lam: torch.tensor(right_joint_loss(m, b, lam).item())).message

    def llm_term_as_a_number(m, b, lam):
        lm = m.lm(b["z"], b["task"], b["input_ids"], b["attention_mask"], b["context"])
        return m.denoising(b)[0] + lam * lm.item()

    assert "gradient is not" in check(llm_term_as_a_number).message


def test_the_difference_is_read_off_the_table():
    table = pd.DataFrame({"all_correct": [0.80, 0.75], "all_correct_se": [0.02, 0.02]}, index=["joint", "separate"])
    check = lambda a: check_regime_difference(table, a)  # noqa: E731
    assert_grades(check, 0.05, 0.5)
    assert "points" in check(5.0).message
    assert "separate minus joint" in check(-0.05).message
    assert "within the noise" in check(0.05).message
