"""The ``llmimg`` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llmimg import __version__


def llmimg(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmimg", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def stage_folders(cache):
    """The trained-model folders of the smoke profile; hidden entries are the cache's lock files."""
    return [p for p in (cache / "smoke").iterdir() if not p.name.startswith(".")]


def test_version():
    result = llmimg("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"llmimg {__version__}"


def test_preview_same_seed_same_bytes(tmp_path):
    (tmp_path / "sub").mkdir()
    a, b, c = tmp_path / "a.png", tmp_path / "sub" / "b.png", tmp_path / "c.png"
    assert llmimg("data", "preview", "--n", "6", "--seed", "4", "-o", str(a)).returncode == 0
    assert llmimg("data", "preview", "--n", "6", "--seed", "4", "-o", str(b)).returncode == 0
    assert llmimg("data", "preview", "--n", "6", "--seed", "5", "-o", str(c)).returncode == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "preview", "--n", "0", "-o", "x.png"], "between 1 and 256"),
        (["data", "preview", "--n", "two", "-o", "x.png"], "expected a whole number"),
        (["data", "preview", "--seed", "-3", "-o", "x.png"], "non-negative"),
        (["data", "preview", "-o", "x.jpg"], "must end in .png"),
        (["data", "preview", "--split", "test", "-o", "x.png"], "invalid choice"),
        (["reproduce", "--profile", "huge"], "invalid choice"),
        (["train", "vae"], "invalid choice"),
        (["eval", "clip", "--n", "0"], "between 1 and"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, args, message):
    result = llmimg(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.splitlines()) == 1  # no usage block, no traceback
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_bench_data_only_json():
    result = llmimg("bench", "--no-pipeline", "--n", "200", "--repeats", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["data_images_per_s"] > 0 and data["data_threads"] == 1
    assert "images_per_s" not in data


def test_bench_pipeline_json(smoke_pipeline, smoke_cache):
    result = llmimg("bench", "--profile", "smoke", "--n", "100", "--repeats", "1", "--quality-n", "2", "--no-compile",
                    "--json", env=cache_env(smoke_cache))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    latency = data["stage_latency_ms"]
    assert set(latency) == {"batch_1", "batch_32"}
    for ms in latency.values():
        assert set(ms) == {"clip_encode", "llm_generate", "denoise", "postprocess", "total"}
        assert ms["denoise"] > 0 and ms["total"] >= ms["denoise"]
    assert data["images_per_s"] > 0 and data["baseline_images_per_s"] > 0
    assert data["baseline_setting"] == "ddpm 1000 steps" and data["quality_prompts"] == 2
    assert data["speedup_vs_baseline"] == pytest.approx(data["quality_images_per_s"] / data["baseline_images_per_s"],
                                                        rel=0.01)
    assert data["speedup_vs_baseline"] > 1  # 10 steps against 1000, whatever the machine
    assert 0 <= data["all_correct"] <= 1 and 0 <= data["baseline_all_correct"] <= 1
    assert data["peak_rss_mb"] > 0
    assert data["flops_per_image"] == pytest.approx(sum(data["flops_per_image_by_stage"].values()), abs=3)
    assert data["peak_matmul_gflops"] > 0 and data["sample_step"]["batch_size"] == 2
    assert 0 < data["mfu_sample"] < 1 and 0 < data["mfu_train"] < 1
    techniques = data["techniques"]
    assert techniques["default"]["speedup"] == 1 and {"distilled_1", "deep_cache", "bf16"} <= set(techniques)
    assert "compile" not in techniques  # --no-compile
    assert "constrained_llm" in techniques and data["timing_trials"] >= 1 and data["timing_noise"] >= 0
    for row in techniques.values():
        assert row["speedup"] > 0 and 0 <= row["all_correct"] <= 1 and row["all_correct_se"] >= 0
        assert row["ms_min"] <= row["ms_per_image"] <= row["ms_max"] and row["n_paired"] == 2
        assert isinstance(row["keeps_baseline_quality"], bool) and isinstance(row["keeps_baseline_quality_1se"], bool)
        assert row["paired_se"] >= 0 and -1 <= row["paired_difference"] <= 1
    fastest = data["fastest_setting"]
    assert fastest["name"] in techniques and fastest["speedup_vs_baseline"] > 0 and fastest["images_per_s"] > 0
    assert isinstance(fastest["meets_baseline_quality"], bool) and fastest["baseline_all_correct_se"] > 0  # floored
    assert 0 <= fastest["llm_share"] <= 1 and fastest["limit_images_per_s"] > 0
    assert fastest["limit_images_per_s"] <= min(fastest["compute_bound_images_per_s"],
                                                fastest["memory_bound_images_per_s"])
    assert fastest["fraction_of_limit"] == pytest.approx(fastest["images_per_s"] / fastest["limit_images_per_s"],
                                                         rel=0.01)
    assert all(isinstance(t["kept"], bool) for t in data["stack_trials"])
    one = data["fastest_for_one"]
    assert one["end_to_end_ms_batch_1"] == one["stage_latency_ms"]["total"] > 0
    assert data["kv_cache"]["same_tokens"] and data["kv_cache"]["positions_fed_without"] > data["kv_cache"][
        "positions_fed_with"]
    assert {(r["scheduler"], r["steps"]) for r in data["sampler_curve"]} >= {("unipc", 1), ("distilled", 1)}


def test_reproduce_unknown_notebook_is_a_one_line_error():
    result = llmimg("reproduce", "--only", "99", "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no notebook matches '99'" in result.stderr and "00_welcome" in result.stderr


def cache_env(path) -> dict[str, str]:
    return {**os.environ, "LLMIMG_CACHE_DIR": str(path), "OMP_NUM_THREADS": "1"}


def test_train_then_eval_clip_prints_one_json_object(tmp_path):
    env = cache_env(tmp_path)
    trained = llmimg("train", "clip", "--profile", "smoke", "--no-progress", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "clip (smoke profile) ready" in trained.stdout and "text_to_image_top1" in trained.stdout
    folders = [p.name for p in stage_folders(tmp_path)]
    assert len(folders) == 1 and folders[0].startswith("clip-")
    result = llmimg("eval", "clip", "--profile", "smoke", "--n", "100", "--json", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout is exactly one JSON object
    for key in ("text_to_image_top1", "image_to_text_top1", "zero_shot_accuracy"):
        assert 0.0 <= data[key] <= 1.0
    assert data["stage"] == "clip" and data["profile"] == "smoke"


def test_eval_llm_trains_what_it_needs(tmp_path):
    result = llmimg("eval", "llm", "--profile", "smoke", "--n", "20", "--json", "--no-progress",
                    env=cache_env(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("valid_rate", "faithfulness", "caption_accuracy", "faithfulness_one_object",
                "faithfulness_two_objects", "heldout_caption_accuracy", "model_faithfulness_two_objects"):
        rate = data[key]
        n = {"faithfulness_one_object": data["n_one_object"],
             "faithfulness_two_objects": data["n_two_objects"]}.get(key, data["n"])
        assert 0.0 <= rate <= 1.0 and data[f"{key}_se"] == pytest.approx((rate * (1 - rate) / n) ** 0.5)
    assert data["n_one_object"] + data["n_two_objects"] == data["n"] == 20
    assert 1.0 <= data["upsample_draws"] <= 16 and data["faithfulness"] >= data["model_faithfulness"]
    assert sorted(p.name.split("-")[0] for p in stage_folders(tmp_path)) == ["clip", "llm"]
    # the pipeline reuses both stages and trains only the generator
    result = llmimg("eval", "pipeline", "--profile", "smoke", "--n", "6", "--json", "--no-progress",
                    env=cache_env(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("all_correct_raw", "all_correct_upsampled", "heldout_all_correct_raw",
                "heldout_all_correct_upsampled"):
        rate = data[key]
        assert rate in {k / 6 for k in range(7)}  # a share of the 6 images
        assert data[f"{key}_se"] == pytest.approx((rate * (1 - rate) / 6) ** 0.5)
    assert data["n"] == 6 and data["stage"] == "pipeline"
    assert sorted(p.name.split("-")[0] for p in stage_folders(tmp_path)) == ["clip", "generator", "llm"]


def test_damaged_cache_is_a_one_line_error(tmp_path):
    env = cache_env(tmp_path)
    assert llmimg("train", "clip", "--profile", "smoke", "--no-progress", env=env).returncode == 0
    (folder,) = stage_folders(tmp_path)
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    result = llmimg("eval", "clip", "--profile", "smoke", "--json", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"'{folder.name}' is damaged: open_clip_model.safetensors has 50 bytes" in result.stderr
    assert "llmimg train clip --force" in result.stderr and result.stderr.count("\n") == 1
    assert f"(model cache: '{tmp_path / 'smoke'}', set by $LLMIMG_CACHE_DIR)" in result.stderr
    assert weights.stat().st_size == 50  # nothing was overwritten behind the user's back


def test_train_generator_prints_its_held_out_metrics_and_eval_the_documented_keys(tmp_path):
    trained = llmimg("train", "generator", "--profile", "smoke", "--no-progress", env=cache_env(tmp_path))
    assert trained.returncode == 0, trained.stderr
    metrics = trained.stdout.splitlines()[-1]
    assert metrics.startswith("held-out metrics (on 8 one-object val descriptions): all_correct ")
    assert all(f" {key} " in metrics for key in ("count_accuracy", "shape", "colour", "size", "position"))
    result = llmimg("eval", "generator", "--profile", "smoke", "--n", "8", "--json", "--no-progress",
                    env=cache_env(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["judge_accuracy_on_real"] == 1.0  # the judge reads real renders exactly
    for key in ("all_correct", "count_accuracy", "clip_score", "cmmd", "frechet_distance"):
        assert isinstance(data[key], float)
    assert set(data["per_attribute"]) == {"shape", "colour", "size", "position"}
    for key in ("all_correct", "count_accuracy", "two_object_all_correct", "two_object_count_accuracy"):
        rate = data[key]
        assert rate in {k / 8 for k in range(9)}  # a share of the 8 images
        assert data[f"{key}_se"] == pytest.approx((rate * (1 - rate) / 8) ** 0.5)
    assert set(data["per_attribute_se"]) == set(data["per_attribute"])


def test_experiment_records_generator_recipes(tmp_path):
    env = {**cache_env(tmp_path / "cache"), "LLMIMG_EXPERIMENTS_DIR": str(tmp_path / "experiments")}
    result = llmimg("experiment", "generator-recipes", "--profile", "smoke", "--only", "default",
                    "learning rate 1e-3", "--steps", "4", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert "default: 4 steps" in result.stdout and "learning rate 1e-3: 4 steps" in result.stdout
    record = json.loads((tmp_path / "experiments" / "generator-recipes-smoke.json").read_text())
    assert set(record["recipes"]) == {"default", "learning rate 1e-3"}
    assert [p["step"] for p in record["recipes"]["default"]["curve"]] == [1, 2, 3, 4]
    assert record["recipes"]["learning rate 1e-3"]["changes"] == {"train.lr": 1e-3}
    bad = llmimg("experiment", "generator-recipes", "--profile", "smoke", "--only", "bigger", env=env)
    assert bad.returncode == 1 and "unknown recipe 'bigger'" in bad.stderr


def test_eval_pipeline_on_the_geneval_world_reports_every_setting_paired(tmp_path):
    """The protocol from the command line: three models trained once (and a fourth, the prompt-trained arm)."""
    result = llmimg("eval", "pipeline", "--world", "geneval", "--profile", "smoke", "--n", "1", "--json",
                    "--no-progress", env=cache_env(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["stages"]) == {"clip", "llm", "generator", "prompt_trained"}
    for split in ("val", "heldout"):
        r = data[split]
        for setting in ("llm_on", "llm_off", "prompt_trained"):
            assert r[setting]["overall"]["n_prompts"] == 6 and len(r["per_image"][setting]) == 28
        assert set(r["paired"]) == set(r["paired_prompt_trained"]) == {"overall", *r["llm_on"]["categories"]}
    assert sorted(p.name.split("-")[0] for p in stage_folders(tmp_path)) == ["clip", "generator", "generator", "llm"]
    figure = tmp_path / "samples.png"
    text = llmimg("eval", "pipeline", "--world", "geneval", "--profile", "smoke", "--n", "1", "--no-progress",
                  "--samples", str(figure), env=cache_env(tmp_path))
    assert text.returncode == 0, text.stderr
    assert "prompt-trained" in text.stdout and "planner faithful" in text.stdout
    from PIL import Image

    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > image.height > 200  # 7 prompts × 8 images
    wrong = llmimg("eval", "generator", "--profile", "smoke", "--samples", str(figure), env=cache_env(tmp_path))
    assert wrong.returncode != 0 and "use it with 'pipeline --world geneval'" in wrong.stderr
