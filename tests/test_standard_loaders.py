"""Saved folders load with the standard loaders alone: diffusers' generic pipeline loader, transformers' text generation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmimg.core.store import CheckpointError
from llmimg.stages import llm as L
from llmimg.pipelines.shapes import ShapesPipeline
from llmimg.core.text import BOS_ID, EOS_ID, encode

PROMPTS = ["a red circle", "a small blue square in the center"]


def run_fresh(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter, offline, in an empty working folder; return what it printed.

    Hugging Face's caches (where diffusers copies a folder's code file) live in ``tmp_path``
    too, so the test writes nothing into the user's caches.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    env.pop("HF_MODULES_CACHE", None)  # then it lies under HF_HOME
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert list(cwd.iterdir()) == []  # loading leaves nothing in the user's working folder
    return done.stdout


RECORDS = {("llmimg.json", "files"), ("llmimg.json", "checksum")}


def saved_before_manifests(folder: Path) -> Path:
    """Make a saved pipeline folder look as saved before pipeline folders had an ``llmimg.json``."""
    (folder / "llmimg.json").unlink()
    index = json.loads((folder / "model_index.json").read_text())
    del index["_llmimg_manifest"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def contents(folder: Path) -> dict[str, object]:
    """Every file's bytes; JSON files parsed, less ``_name_or_path`` (diffusers records where each part was loaded from)
    and the manifest's checksums of those files (which differ with it), so its own checksum too."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json":
            out[str(p.relative_to(folder))] = {k: v for k, v in json.loads(p.read_text()).items()
                                               if k != "_name_or_path" and (p.name, k) not in RECORDS}
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


# -- the pipeline ---------------------------------------------------------------------
def test_generic_diffusers_loader_loads_a_saved_pipeline(smoke_pipeline, saved, tmp_path):
    code = f"""
import json
import numpy as np
import torch
from diffusers import DiffusionPipeline

torch.set_num_threads(1)
try:
    DiffusionPipeline.from_pretrained({str(saved)!r})
except ValueError as err:
    assert "trust_remote_code=True" in str(err), err  # the folder's code runs only when asked
else:
    raise AssertionError("loaded without trust_remote_code")
pipe = DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)
out = pipe({PROMPTS!r}, num_inference_steps=2, generator=torch.Generator().manual_seed(7), output_type="np")
np.save({str(tmp_path / "images.npy")!r}, out.images)
classes = {{name: type(getattr(pipe, name)).__name__ for name in
           ("clip", "tokenizer", "llm", "prefix_mapper", "unet", "scheduler")}}
print(json.dumps({{"pipeline": type(pipe).__module__ + "." + type(pipe).__name__, "classes": classes,
                  "descriptions": out.descriptions}}))
"""
    got = json.loads(run_fresh(code, tmp_path).splitlines()[-1])
    assert got["pipeline"] == "llmimg.pipelines.shapes.ShapesPipeline"
    assert got["classes"] == {name: type(getattr(smoke_pipeline, name)).__name__ for name in got["classes"]}
    ours = smoke_pipeline(PROMPTS, num_inference_steps=2, generator=torch.Generator().manual_seed(7), output_type="np")
    assert got["descriptions"] == ours.descriptions
    assert np.array_equal(np.load(tmp_path / "images.npy"), ours.images)


def test_model_index_names_the_code_file_saved_beside_it(saved):
    index = json.loads((saved / "model_index.json").read_text())
    module, name = index["_class_name"]
    assert name == "ShapesPipeline" and (saved / f"{module}.py").is_file()


def test_shapes_pipeline_loads_without_running_the_folders_code(saved, tmp_path):
    copy = shutil.copytree(saved, tmp_path / "copy")
    module = json.loads((copy / "model_index.json").read_text())["_class_name"][0]
    (copy / f"{module}.py").write_text("raise RuntimeError('ran the folder code')\n")
    with pytest.raises(CheckpointError, match=f"{module}.py has .* bytes, not the"):  # not the file that was saved
        ShapesPipeline.from_pretrained(copy)
    saved_before_manifests(copy)  # as saved before the record: the changed file is not run either
    assert type(ShapesPipeline.from_pretrained(copy)) is ShapesPipeline


def test_save_load_save_round_trips(saved, tmp_path):
    ShapesPipeline.from_pretrained(saved).save_pretrained(tmp_path / "again")
    assert contents(tmp_path / "again") == contents(saved)


def test_folders_saved_before_the_code_file_still_load(saved, tmp_path):
    old = saved_before_manifests(shutil.copytree(saved, tmp_path / "old"))  # which those folders did not have either
    index = json.loads((old / "model_index.json").read_text())
    (old / f"{index['_class_name'][0]}.py").unlink()
    index["_class_name"] = "ShapesPipeline"
    (old / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    assert type(ShapesPipeline.from_pretrained(old)) is ShapesPipeline


# -- the LLM --------------------------------------------------------------------------
def test_text_generation_pipeline_continues_a_prompt(smoke_llm, tmp_path):
    from transformers import pipeline

    path = smoke_llm.save_pretrained(tmp_path / "llm")
    generate = pipeline("text-generation", model=str(path), tokenizer=str(path))
    assert generate.tokenizer("a red circle")["input_ids"][-1] != EOS_ID  # a prompt is not a finished text
    text = generate("a red circle", do_sample=False)[0]["generated_text"]
    assert text.startswith("a red circle ") and len(text.split()) > 3, text
    # The library still reads whole texts, <bos> words <eos>, from the saved LLM.
    ids = encode(L.ShapesLLM.from_pretrained(path, smoke_llm.clip).tokenizer, ["a red circle"])["input_ids"][0]
    assert ids[0] == BOS_ID and ids[4] == EOS_ID
