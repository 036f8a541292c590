"""The hard-negatives experiment of notebook 03: arms that differ only in the binding loss, paired per seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from llmimg.core.evaluation import paired_difference
from llmimg.research import clip_binding
from llmimg.stages import clip as clip_stage


def test_the_arms_differ_only_in_the_weight_of_the_binding_loss():
    default = clip_stage.default_config("smoke", "geneval")
    assert clip_binding.arm_config(clip_binding.DEFAULT, 0, "smoke") == default
    without = clip_binding.arm_config("no hard negatives", 2, "smoke")
    assert without == replace(default, hard_negative_weight=0.0, seed=2)
    with pytest.raises(ValueError, match="unknown arm"):
        clip_binding.arm_config("no negatives", 0, "smoke")


def test_a_missing_or_damaged_record_is_named_with_its_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    assert clip_binding.seed_numbers("smoke") == {}
    with pytest.raises(FileNotFoundError, match="llmimg experiment clip-binding --profile smoke"):
        clip_binding.load("smoke")
    clip_binding.results_path("smoke").write_text("{")
    with pytest.raises(ValueError, match="clip-binding-smoke.json is damaged"):
        clip_binding.load("smoke")


def test_the_experiment_pairs_both_arms_on_the_same_images_at_every_seed(smoke_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="two different seeds"):
        clip_binding.run("smoke", seeds=(1, 1), progress=False)
    record = clip_binding.run("smoke", seeds=(0, 1), progress=False)
    assert clip_binding.load("smoke") == json.loads(json.dumps(record))
    assert [r["seed"] for r in record["runs"]["no hard negatives"]] == [0, 1]
    # seed 1's pair recomputed from the two cached models: the same images, so the same paired difference
    outcomes = [clip_stage.binding_outcomes(clip_stage.get("smoke", config=clip_binding.arm_config(arm, 1, "smoke"),
                                                           progress=False), n=record["n"])
                for arm in clip_binding.ARMS]
    expected = paired_difference(*outcomes)
    assert record["paired"][1]["diff"] == pytest.approx(expected.diff) and record["paired"][1]["n"] == record["n"]
    assert record["paired"][1]["se"] == pytest.approx(expected.se)
    for arm, runs in record["runs"].items():
        values = [r["binding_val"] for r in runs]
        assert record["summary"][arm]["binding_val"]["mean"] == pytest.approx(sum(values) / 2)
        assert record["summary"][arm]["binding_val"]["seed_sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    numbers = clip_binding.seed_numbers("smoke")
    assert set(numbers) == {f"clip.{m}" for m in clip_stage.HEADLINE}
    assert numbers["clip.text_to_image_top1"] == [r["text_to_image_top1"] for r in record["runs"][clip_binding.DEFAULT]]


def test_the_command_records_and_prints_the_comparison(smoke_cache, tmp_path):
    """``llmimg experiment clip-binding``, after the test above trained its models into the session cache."""
    env = {**os.environ, "LLMIMG_CACHE_DIR": str(smoke_cache), "LLMIMG_EXPERIMENTS_DIR": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "llmimg", "experiment", "clip-binding", "--profile", "smoke",
                             "--seeds", "0", "1", "--no-progress"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "clip-binding-smoke.json" in result.stdout and "seed 1, binding on val" in result.stdout
    record = json.loads((tmp_path / "clip-binding-smoke.json").read_text())
    assert set(record["runs"]) == set(clip_binding.ARMS) and record["seeds"] == [0, 1]
