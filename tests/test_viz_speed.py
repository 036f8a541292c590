"""The speed figures of notebook 08 (llmimg.core.viz.roofline, llmimg.core.viz.speed_quality): what they draw and name."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from llmimg.speed.plots import roofline, speed_quality


def row(name, ms, rate):
    return {"name": name, "ms_per_image": ms, "all_correct": rate, "all_correct_se": 0.02}


def test_the_frontier_joins_the_settings_nothing_beats_and_names_them():
    rows = [row("slow_best", 100.0, 0.99), row("fast_ok", 10.0, 0.90), row("dominated", 50.0, 0.85),
            row("middle", 30.0, 0.95), row("fastest_bad", 5.0, 0.30)]
    ax = speed_quality(rows, label=("dominated",))
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("frontier")]
    assert list(line.get_xdata()) == [5.0, 10.0, 30.0, 100.0]  # "dominated" is slower and worse than "middle"
    assert sorted(t.get_text() for t in ax.texts) == ["dominated", "fast_ok", "fastest_bad", "middle", "slow_best"]
    assert sorted(t.get_text() for t in speed_quality(rows).texts) == ["fast_ok", "fastest_bad", "middle", "slow_best"]
    plt.close("all")


def test_the_roofline_bends_at_the_ridge_point_and_places_every_stage():
    points = [{"stage": "llm", "batch_size": 1, "intensity": 1.0, "gflop_per_s": 1.0},
              {"stage": "denoise", "batch_size": 32, "intensity": 600.0, "gflop_per_s": 100.0}]
    ax = roofline(points, peak_gflops=200.0, bandwidth_gbs=20.0)
    (roof,) = ax.get_lines()
    x, y = roof.get_xdata(), roof.get_ydata()
    assert max(y) == pytest.approx(200.0) and y[0] == pytest.approx(20.0 * x[0])  # flat roof, slanted roof
    assert x[0] < 1.0 and x[-1] > 600.0  # the roofs span every point
    assert sorted(t.get_text() for t in ax.texts) == ["denoise b32", "llm b1"]
    plt.close("all")
