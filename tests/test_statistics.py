"""``llmimg.core.evaluation.statistics``: rates with standard errors and the paired comparison, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmimg.core.evaluation import beyond_noise, mcnemar_p, paired_difference, rate_with_se, standard_error
from llmimg.core.evaluation.statistics import z_score

# Ten items: a right on 7, b right on 4; a right and b wrong on items 1, 2, 7, 9, the reverse on item 4.
A = [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
B = [1, 0, 0, 0, 1, 1, 0, 0, 1, 0]


def binomial_two_sided(k: int, m: int) -> float:
    """The exact McNemar p-value written out term by term: twice the smaller tail of Binomial(m, 1/2)."""
    tail = sum(math.comb(m, i) * 0.5**m for i in range(min(k, m - k) + 1))
    return min(1.0, 2 * tail)


def test_paired_difference_of_right_wrong_scores_by_hand():
    p = paired_difference(A, B)
    assert (p.mean_a, p.mean_b, p.n, p.a_only, p.b_only) == (0.7, 0.4, 10, 4, 1)
    assert p.diff == pytest.approx(0.3)
    # Differences d = (0, 1, 1, 0, -1, 0, 0, 1, 0, 1): mean 0.3, plug-in variance 5/10 - 0.09 = 0.41.
    assert p.se == pytest.approx(math.sqrt(0.41 / 10))
    # The textbook form for paired proportions: sqrt((b + c) - (b - c)^2 / n) / n.
    assert p.se == pytest.approx(math.sqrt(5 - 3**2 / 10) / 10)
    # McNemar: 5 discordant items, 1 going b's way: 2 * P(X <= 1) = 2 * (1 + 5) / 32.
    assert p.p_value == pytest.approx(12 / 32)
    assert p.z == pytest.approx(0.3 / math.sqrt(0.041))
    assert p.verdict() == "within noise"
    assert p.verdict("image", "text") == "within noise"


def test_a_difference_of_two_paired_standard_errors_is_called():
    a = [1] * 10 + [0] * 30  # 40 items: a right and b wrong on 10, both the same on the rest
    b = [0] * 10 + [0] * 30
    p = paired_difference(a, b)
    assert (p.a_only, p.b_only) == (10, 0)
    assert p.p_value == pytest.approx(2 / 2**10)
    assert p.se == pytest.approx(math.sqrt((10 / 40 - 0.25**2) / 40))
    assert p.z > 2 and p.verdict("image", "text") == "image ahead"
    swapped = paired_difference(b, a)
    assert swapped.verdict("image", "text") == "text ahead" and swapped.diff == pytest.approx(-0.25)
    line = p.sentence("image", "text")
    assert "+25.0 points" in line and "discordant 10 vs 0" in line and line.endswith("image ahead")


def test_the_rule_is_stated_once_at_two_standard_errors_and_the_verdict_reads_it():
    assert beyond_noise(0.2, 0.1) and beyond_noise(-0.2, 0.1) and not beyond_noise(0.199, 0.1)
    assert beyond_noise(0.01, 0.0) and not beyond_noise(0.0, 0.0)  # no noise: any difference is one
    assert z_score(-0.3, 0.1) == pytest.approx(-3) and z_score(0.1, 0) == math.inf and z_score(0, 0) == 0
    for a, b in (([1] * 8 + [0] * 12, [0] * 20), ([1] * 3 + [0] * 17, [0] * 20)):
        p = paired_difference(a, b)
        assert (p.verdict() == "within noise") == (not beyond_noise(p.diff, p.se)) and p.z == z_score(p.diff, p.se)


def test_pairing_sees_a_difference_that_independent_trials_would_call_noise():
    # b is a with 6 of 60 wrong items turned right, nothing else moved: the unpaired rule cannot tell,
    # the paired one can, because the items that decide both are the same.
    rng = np.random.default_rng(0)
    a = (rng.random(60) < 0.5).astype(int)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:6]] = 1
    p = paired_difference(b, a)
    unpaired = math.hypot(standard_error(b.mean(), 60), standard_error(a.mean(), 60))
    assert p.diff == pytest.approx(0.1) and p.diff < 2 * unpaired
    assert p.verdict() == "a ahead"


@pytest.mark.parametrize("k, m", [(0, 1), (1, 5), (3, 7), (4, 8), (12, 40), (0, 0)])
def test_mcnemar_matches_the_binomial_computed_term_by_term(k, m):
    assert mcnemar_p(k, m - k) == pytest.approx(binomial_two_sided(k, m) if m else 1.0)
    assert mcnemar_p(m - k, k) == mcnemar_p(k, m - k)


def test_mcnemar_stays_exact_for_many_discordant_items():
    p = mcnemar_p(1400, 1600)  # 2^3000 overflows a float; the exact fraction does not
    assert 0 < p < 1e-3
    assert mcnemar_p(1500, 1500) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_p(-1, 3)


def test_equal_arms_have_zero_standard_error_and_no_division_by_zero():
    p = paired_difference([1, 0, 1, 1], [1, 0, 1, 1])
    assert (p.diff, p.se, p.z, p.p_value, p.a_only, p.b_only) == (0.0, 0.0, 0.0, 1.0, 0, 0)
    assert p.verdict() == "within noise" and "paired se 0.0" in p.sentence()
    constant = paired_difference([1, 1, 1], [0, 0, 0])  # every item moved the same way: no sampling noise
    assert constant.se == 0.0 and math.isinf(constant.z) and constant.verdict() == "a ahead"
    assert constant.p_value == pytest.approx(0.25)  # ... though three items say little: McNemar tells


def test_real_valued_scores_have_a_paired_se_and_no_mcnemar():
    p = paired_difference(torch.tensor([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 2.0]))
    # d = (0.5, -0.5, 1.0): mean 1/3, plug-in variance (0.25 + 0.25 + 1) / 3 - 1/9.
    assert p.diff == pytest.approx(1 / 3)
    assert p.se == pytest.approx(math.sqrt((0.5 - 1 / 9) / 3))
    assert p.a_only is None and p.b_only is None and p.p_value is None
    assert set(p.as_dict()) == {"mean_a", "mean_b", "diff", "se", "n", "a_only", "b_only", "p_value"}


def test_rate_with_se_is_the_standard_error_of_the_rate():
    rate = rate_with_se([True, False, True, True])
    assert rate == (0.75, pytest.approx(standard_error(0.75, 4)), 4)
    assert rate.rate == 0.75 and rate.n == 4
    assert rate_with_se(np.ones(5)).se == 0.0
    assert rate_with_se([2.0, 4.0]) == (3.0, pytest.approx(1 / math.sqrt(2)), 2)


@pytest.mark.parametrize("a, b, message", [
    ([1, 0], [1, 0, 1], "one score per item in both settings, got 2 and 3"),
    ([], [], "holds no items"),
    ([1, float("nan")], [1, 0], "NaN or infinite"),
    ([[1, 0]], [[1, 0]], "1-D"),
    (["x"], [1], "must be numbers"),
])
def test_bad_scores_are_refused_in_one_line(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)
