"""The generator recipe search (llmimg.research.recipes): configs, records and the no-write rule of notebooks."""

from __future__ import annotations

import json

import pytest

from llmimg.stages import generator as G
from llmimg.research import recipes as R


def test_recipes_change_only_what_they_name():
    base = G.default_config("default")
    assert R.recipe_config("default", "default") == base  # the pipeline's own generator, same cache key
    eps = R.recipe_config("epsilon target, learning rate 1e-3", "default")
    assert eps.prediction_type == "epsilon" and eps.train.lr == 1e-3
    assert eps.as_dict() | {"prediction_type": "sample", "train": base.train.as_dict()} == base.as_dict()
    assert base.train.lr == 2e-3  # chosen by this search
    slow = R.recipe_config("learning rate 1e-3", "default", steps=600)
    assert slow.train.lr == 1e-3 and slow.train.steps == 600 and slow.curve_every == 150
    assert slow.train.batch_size == base.train.batch_size
    half = R.recipe_config("half width", "default")
    assert half.block_out_channels == (48, 96) and half.train.lr == base.train.lr  # a valid config (groups divide)
    both = R.recipe_config("half width, learning rate 1e-3", "default")
    assert both.block_out_channels == (48, 96) and both.train.lr == 1e-3 and both.train.steps == base.train.steps
    with pytest.raises(ValueError, match="unknown recipe 'bigger'"):
        R.recipe_config("bigger", "default")
    with pytest.raises(ValueError, match="steps must be positive"):
        R.recipe_config("default", "default", steps=0)


def test_run_records_and_get_never_writes(tmp_path, monkeypatch, smoke_clip):
    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    assert R.load("smoke") is None
    shown = R.run("smoke", ["default"], steps=2, progress=False, record=False)
    assert not list(tmp_path.iterdir())  # record=False writes nothing
    assert [p["step"] for p in shown["recipes"]["default"]["curve"]] == [1, 2]
    R.run("smoke", ["default"], steps=2, progress=False)
    R.run("smoke", ["no pooled text"], steps=2, progress=False)  # merged into the same record
    saved = json.loads(R.results_path("smoke").read_text())
    assert set(saved["recipes"]) == {"default", "no pooled text"}
    two = saved["recipes"]["default"]["two_objects"]
    assert two["n"] == 8 and two["all_correct"] in {k / 8 for k in range(9)}
    assert two["all_correct_se"] == pytest.approx((two["all_correct"] * (1 - two["all_correct"]) / 8) ** 0.5)
    stale = json.loads(R.results_path("smoke").read_text())
    stale["recipes"]["a recipe since removed"] = stale["recipes"]["default"]
    R.results_path("smoke").write_text(json.dumps(stale))
    R.run("smoke", ["default"], steps=2, progress=False)
    assert "a recipe since removed" not in R.load("smoke")["recipes"]
    assert R.get("smoke") == saved  # a recorded search is read, not rerun
    table = R.table(saved)
    assert set(table["recipe"]) == {"default", "no pooled text"} and len(table) == 4
