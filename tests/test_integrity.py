"""Damaged models never load, saving never harms the user's files, a full disk is one line: on the smoke models.

Each damage is one a careless hand, a failing disk or a hostile edit can make to a saved
folder. A folder saved now records its files' sizes and checksums, so any change to a
recorded file is caught; a folder saved before that record existed (as the caches
trained by earlier releases are) is still checked by the loaders themselves: configs
against what the model was trained with, the tokenizer against the course's, weights
for numbers that are not finite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmimg.core.folders import StorageError
from llmimg.core.store import CheckpointError
from llmimg.pipelines.shapes import ShapesPipeline
from llmimg.stages.clip import ShapesCLIP
from llmimg.stages.generator import ShapesGenerator
from llmimg.stages.llm import ShapesLLM


# -- damages ------------------------------------------------------------------------------------
def write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def overwrite_middle(name: str, data: bytes = b"\x7f" * 16):
    """Bytes written into the middle of a file: in a weights file, numbers near 3e38 (finite, and drawing black)."""
    def damage(folder: Path) -> None:
        content = bytearray((folder / name).read_bytes())
        middle = len(content) // 2
        content[middle:middle + len(data)] = data
        (folder / name).write_bytes(bytes(content))
    return damage


def rename_key(name: str, old: str, new: str):
    """One flipped byte in a JSON key."""
    return lambda folder: (folder / name).write_text((folder / name).read_text().replace(f'"{old}"', f'"{new}"', 1))


def nan_weights(name: str):
    """A valid safetensors file whose first floating-point tensor is all NaN."""
    def damage(folder: Path) -> None:
        from llmimg.core.store import load_tensors, save_tensors

        tensors = load_tensors(folder / name)
        first = next(k for k, v in tensors.items() if v.is_floating_point())
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_tensors(tensors, folder / name)
    return damage


def pickled_mapper(folder: Path) -> None:
    """The prefix mapper's weights as a pickle file (what torch.save writes) instead of safetensors."""
    from llmimg.core.store import load_tensors

    weights = folder / "prefix_mapper" / "diffusion_pytorch_model.safetensors"
    torch.save(load_tensors(weights), weights.with_suffix(".bin"))
    weights.unlink()


@pytest.fixture(scope="module")
def folders(smoke_clip, smoke_llm) -> dict[str, Path]:
    """The smoke profile's three stage folders in the session cache (saved by this code, so with their record).

    Asked of the stages, not found by name: the cache may also hold other worlds' models, trained by other tests.
    """
    from llmimg.stages import generator

    return {"clip": smoke_clip.path, "llm": smoke_llm.path, "generator": generator.get("smoke", progress=False).path}


def load(stage: str, folder: Path, clip: ShapesCLIP):
    if stage == "clip":
        return ShapesCLIP.from_pretrained(folder)
    if stage == "llm":
        return ShapesLLM.from_pretrained(folder, clip)
    return ShapesGenerator.from_pretrained(folder, clip)


RECORDED = [  # caught by the manifest's record of the files
    ("clip", write("tokenizer_config.json", "{}"), "tokenizer_config.json has 2 bytes"),
    ("clip", overwrite_middle("open_clip_model.safetensors"), "open_clip_model.safetensors is not the file"),
    ("llm", write("llmimg.json", "{}"), "is not an llmimg manifest"),
    ("llm", rename_key("llmimg.json", "n_embd", "n_embe"), "llmimg.json in '.*' was changed after it was saved"),
    ("llm", rename_key("config.json", "n_embd", "n_embe"), "config.json is not the file that was saved"),
    ("generator", write("unet/config.json", "null"), "unet/config.json has 4 bytes"),
    ("generator", write("scheduler/scheduler_config.json", "{}"), "scheduler/scheduler_config.json has 2 bytes"),
    ("generator", overwrite_middle("unet/diffusion_pytorch_model.safetensors"),
     "unet/diffusion_pytorch_model.safetensors is not the file that was saved"),
]
UNRECORDED = [  # a folder saved before the record: the loaders' own checks
    ("clip", write("tokenizer_config.json", "{}"), "the tokenizer in '.*' is damaged"),
    ("clip", rename_key("open_clip_config.json", "width", "widtg"), "does not state 'model_cfg.vision_cfg.width'"),
    ("llm", rename_key("config.json", "n_embd", "n_embe"), "config.json in '.*' does not state 'n_embd'"),
    ("llm", rename_key("llmimg.json", "n_embd", "n_embe"), "LLMConfig has no field 'n_embe'"),
    ("llm", write("prefix_mapper/config.json", "null"), "prefix_mapper/config.json in '.*' is not a JSON object"),
    ("llm", pickled_mapper, "not a loadable LLM checkpoint"),  # weights are read from safetensors only
    ("generator", write("unet/config.json", "null"), "unet/config.json in '.*' is not a JSON object"),
    ("generator", write("scheduler/scheduler_config.json", "{}"), "scheduler_config.json in '.*' does not state"),
    ("generator", rename_key("scheduler/scheduler_config.json", "beta_schedule", "beta_schedulf"),
     "does not state 'beta_schedule'"),
    ("generator", nan_weights("unet/diffusion_pytorch_model.safetensors"), "holds numbers that are not finite"),
]
RETRAIN = {"clip": "llmimg train clip --force", "llm": "llmimg train llm --force",
           "generator": "llmimg train generator --force"}


@pytest.mark.parametrize("stage, damage, message", RECORDED, ids=[f"{s}: {m}" for s, _, m in RECORDED])
def test_a_damaged_model_is_one_checkpoint_error_naming_it_and_its_fix(folders, smoke_clip, tmp_path, stage,
                                                                       damage, message):
    copy = shutil.copytree(folders[stage], tmp_path / folders[stage].name)
    load(stage, copy, smoke_clip)  # loads as saved
    damage(copy)
    with pytest.raises(CheckpointError) as caught:
        load(stage, copy, smoke_clip)
    text = str(caught.value)
    assert copy.name in text and RETRAIN[stage] in text and "\n" not in text
    assert re.search(message, text), text


@pytest.mark.parametrize("stage, damage, message", UNRECORDED, ids=[f"{s}: {m}" for s, _, m in UNRECORDED])
def test_a_damaged_model_saved_before_the_record_is_caught_all_the_same(folders, smoke_clip, tmp_path,
                                                                        saved_before_records, stage, damage, message):
    copy = saved_before_records(shutil.copytree(folders[stage], tmp_path / folders[stage].name))
    load(stage, copy, smoke_clip)  # an old folder loads
    damage(copy)
    with pytest.raises(CheckpointError, match=message) as caught:
        load(stage, copy, smoke_clip)
    assert RETRAIN[stage] in str(caught.value) and "\n" not in str(caught.value)


# -- the saved pipeline --------------------------------------------------------------------------------
def drop_stage_configs(folder: Path) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    del index["stage_configs"]
    (folder / "model_index.json").write_text(json.dumps(index))


PIPELINE = [
    (drop_stage_configs, True, "model_index.json has"),
    (drop_stage_configs, False, "model_index.json in '.*' has no stage_configs"),
    (write("scheduler/scheduler_config.json", "{}"), True, "scheduler/scheduler_config.json has 2 bytes"),
    (write("scheduler/scheduler_config.json", "{}"), False, "scheduler_config.json in '.*' does not state"),
    (write("tokenizer/tokenizer_config.json", "{}"), False, "the tokenizer in '.*' is damaged"),
    (write("unet/config.json", "null"), False, "the pipeline folder '.*' is damaged"),
    (overwrite_middle("unet/diffusion_pytorch_model.safetensors"), True, "is not the file that was saved"),
    (nan_weights("unet/diffusion_pytorch_model.safetensors"), False, "holds numbers that are not finite"),
]


@pytest.mark.parametrize("damage, recorded, message", PIPELINE, ids=[m for _, _, m in PIPELINE])
def test_a_damaged_pipeline_folder_is_one_checkpoint_error(saved, tmp_path, damage, recorded, message):
    copy = shutil.copytree(saved, tmp_path / "pipe")
    if not recorded:  # saved before pipeline folders had an llmimg.json (and model_index.json said so)
        (copy / "llmimg.json").unlink()
        index = json.loads((copy / "model_index.json").read_text())
        del index["_llmimg_manifest"]
        (copy / "model_index.json").write_text(json.dumps(index))
    ShapesPipeline.from_pretrained(copy)
    damage(copy)
    with pytest.raises(CheckpointError, match=message) as caught:
        ShapesPipeline.from_pretrained(copy)
    assert "save_pretrained" in str(caught.value) and "\n" not in str(caught.value)


def test_a_pipeline_folder_that_lost_its_manifest_is_refused(saved, tmp_path):
    copy = shutil.copytree(saved, tmp_path / "pipe")
    (copy / "llmimg.json").unlink()  # model_index.json says there was one: not an old folder, a damaged one
    with pytest.raises(CheckpointError, match="'pipe' has no llmimg.json"):
        ShapesPipeline.from_pretrained(copy)


def test_damaged_weights_in_the_cache_stop_generate_with_one_line(folders, smoke_cache, tmp_path):
    """Before, sixteen bytes in the UNet's weights drew a black image and exited 0."""
    cache = shutil.copytree(smoke_cache, tmp_path / "cache", ignore=shutil.ignore_patterns("*.partial"))
    overwrite_middle("unet/diffusion_pytorch_model.safetensors")(cache / "smoke" / folders["generator"].name)
    env = {**os.environ, "LLMIMG_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "llmimg", "generate", "a red circle", "--profile", "smoke",
                           "--no-progress", "-o", str(tmp_path / "out.png")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"'{folders['generator'].name}' is damaged" in done.stderr
    assert "llmimg train generator --force" in done.stderr
    assert f"model cache: '{cache / 'smoke'}', set by $LLMIMG_CACHE_DIR" in done.stderr
    assert not (tmp_path / "out.png").exists()


# -- saving into a folder the user names -----------------------------------------------------------------
@pytest.fixture(scope="module")
def stages(smoke_pipeline):
    view = smoke_pipeline
    return {"clip": view.text_encoder, "llm": view.writer, "generator": view.image_generator}


@pytest.mark.parametrize("stage", ["clip", "llm", "generator"])
def test_saving_a_stage_keeps_the_users_files_and_refuses_a_folder_that_is_not_a_model(stages, smoke_clip,
                                                                                      tmp_path, stage):
    model = stages[stage]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("notes")
    with pytest.raises(ValueError, match="not empty and holds no saved .*nothing was written"):
        model.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["important.txt"]
    target = model.save_pretrained(tmp_path / "model")
    (target / "important.txt").write_text("notes")
    model.save_pretrained(target)  # again, over the model: only its own files are replaced
    assert (target / "important.txt").read_text() == "notes"
    load(stage, target, smoke_clip)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "model"]  # no staging folder left


def test_a_full_disk_while_saving_a_stage_is_one_line_and_leaves_nothing(stages, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(StorageError, match=r"^cannot write the CLIP into '.*new': no space left on the device; free"):
        stages["clip"].save_pretrained(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_a_file_size_limit_while_training_is_one_line_naming_the_cache(tmp_path):
    """`ulimit -f`: writes past the limit fail with EFBIG, as on a full disk (the issue's own reproduction)."""
    env = {**os.environ, "LLMIMG_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = f"ulimit -f 200; exec {sys.executable} -m llmimg train generator --profile smoke --no-progress"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert line.startswith("llmimg: error: cannot write generator-") and "into the model cache" in line, line
    assert "a file grew past the size limit (ulimit -f)" in line and "$LLMIMG_CACHE_DIR" in line
    finished = [p.name for p in (tmp_path / "cache" / "smoke").iterdir() if p.name.startswith("generator-")
                and not p.name.endswith(".partial")]
    assert finished == []  # no half model
