"""The speed lab's verdicts (llmimg.speed.verdicts) give known answers on constructed data."""

from __future__ import annotations

import pytest

from llmimg.speed import verdicts as V


def row(correct):
    rate = sum(correct) / len(correct)
    return {"correct": correct, "all_correct": rate, "n": len(correct),
            "all_correct_se": (rate * (1 - rate) / len(correct)) ** 0.5}


def test_paired_quality_pairs_image_by_image_on_the_prompts_both_drew():
    reference = row([1] * 60 + [0] * 4)
    # Three images lost, none gained: diff -3/64, paired se sqrt((3 - 9/64)) / 64, 1.8 se: kept by the paired rule.
    lost3 = row([1] * 57 + [0] * 3 + [0] * 4)
    out = V.paired_quality(lost3, reference)
    assert out["paired_difference"] == pytest.approx(-3 / 64)
    assert out["paired_se"] == pytest.approx((3 - 9 / 64) ** 0.5 / 64)
    assert out["n_paired"] == 64 and out["keeps_quality"]
    # Four lost: 2.07 paired standard errors below, so not kept; the one-SE reading also says no.
    lost4 = V.paired_quality(row([1] * 56 + [0] * 8), reference)
    assert not lost4["keeps_quality"] and not lost4["keeps_quality_1se"]
    # A setting ahead by any margin keeps the quality; a longer row is paired on the reference's prompts.
    ahead = V.paired_quality(row([1] * 64 + [0] * 64), reference)
    assert ahead["n_paired"] == 64 and ahead["paired_difference"] == pytest.approx(4 / 64) and ahead["keeps_quality"]


def test_the_paired_rule_sees_what_the_one_se_reading_misses():
    # The same 6 images flip against a perfect reference: 6/64 below is 9 points, 3.2 paired se but under 2 unpaired
    # se with both floored at one trial; a pairing that moves items both ways is noise, one that moves them one way
    # is not.
    reference = row([1] * 64)
    one_way = V.paired_quality(row([1] * 58 + [0] * 6), reference)
    assert not one_way["keeps_quality"]
    both_ways = V.paired_quality(row([1] * 58 + [0] * 6), row([1] * 52 + [0] * 6 + [1] * 6))
    assert both_ways["paired_difference"] == 0 and both_ways["keeps_quality"]


def test_paired_quality_needs_scores():
    with pytest.raises(ValueError, match="per-image scores"):
        V.paired_quality({"correct": []}, row([1]))


def test_ratios_and_the_noise_of_the_exact_switches():
    ms = {"default": [10.0, 10.0, 12.0], "exact": [10.0, 11.0, 12.0], "fast": [5.0, 5.0, 6.0]}
    assert V.ratios(ms["default"], ms["fast"]) == [2.0, 2.0, 2.0]
    spread = (1 - 10 / 11) / 1.0  # exact's ratios 1, 10/11, 1: (max - min) / median
    assert V.timing_noise(ms, "default", ["exact"]) == pytest.approx(spread)
    assert V.timing_noise(ms, "default", []) == pytest.approx(2 / 10)  # no exact switch: the default's own spread
    with pytest.raises(ValueError, match="same number of trials"):
        V.ratios([1.0], [1.0, 2.0])


def test_a_gain_counts_only_above_the_noise():
    assert V.gain_beyond_noise([10.0] * 5, [8.0] * 5, 0.1) == (pytest.approx(0.25), True)
    gain, kept = V.gain_beyond_noise([10.0] * 5, [9.5] * 5, 0.1)
    assert gain == pytest.approx(10 / 9.5 - 1) and not kept
