"""The offline mode as a whole: the three trained slots saved as hub folders, loaded by the hub loader, drawing."""

from __future__ import annotations

import numpy as np
import torch

from llmimg.cli import main
from llmimg.pipelines.pretrained import offline


def test_the_cli_saves_three_hub_folders_that_load_and_draw(smoke_clip, tmp_path, capsys):
    out = tmp_path / "offline-models"
    assert main(["pretrained", "offline", "-o", str(out), "--profile", "smoke"]) == 0
    printed = capsys.readouterr().out
    for slot in ("clip", "llm", "generator"):
        assert str(out / slot) in printed
    assert (out / "clip" / "open_clip_config.json").is_file()
    assert (out / "llm" / "tokenizer_config.json").is_file() and (out / "generator" / "model_index.json").is_file()

    pipe = offline.trained_pipeline(out, "smoke", progress=False)  # saves over its own folders, then pretrained.load
    assert type(pipe.image_generator).__name__ == "StableDiffusionPipeline"
    assert type(pipe.writer.model).__name__ == "Qwen2ForCausalLM" and pipe.writer.kind == "chat"
    assert pipe.config.clip_pretrained is None and pipe.config.num_inference_steps == offline.SAMPLING[
        "num_inference_steps"]
    result = pipe("a red circle", generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    image = np.asarray(result.images[0])
    assert image.shape == (32, 32, 3) and result.descriptions[0]
    again = pipe("a red circle", generator=torch.Generator().manual_seed(0), num_inference_steps=2)
    assert again.descriptions == result.descriptions and np.array_equal(np.asarray(again.images[0]), image)


def test_the_cli_refuses_a_folder_holding_something_else(tmp_path, capsys):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "notes.txt").write_text("mine")
    assert main(["pretrained", "offline", "-o", str(tmp_path), "--profile", "smoke"]) == 1
    assert "notes.txt" not in capsys.readouterr().out and (tmp_path / "clip" / "notes.txt").read_text() == "mine"
