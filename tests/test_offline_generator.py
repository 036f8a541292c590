"""The offline mode's trained generator: a Stable Diffusion pipeline trained on ShapesWorld, loaded as a hub one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmimg.core.store import CheckpointError
from llmimg.pipelines.pretrained import PretrainedConfig, PretrainedPipeline, load_generator, tiny_components
from llmimg.pipelines.pretrained.models import load_clip, load_writer
from llmimg.pipelines.pretrained.offline import generator as offline
from llmimg.pipelines.pretrained.offline.text_encoder import clip_text_model, clip_tokenizer

TEXTS = ["a large red circle in the top left and a small blue square in the center", "a small green cross", ""]


@pytest.fixture(scope="module")
def saved(smoke_clip, tmp_path_factory):
    """The smoke profile's trained pipeline, written once with save_generator (trained into the session cache)."""
    return offline.save_generator(tmp_path_factory.mktemp("offline") / "generator", "smoke", progress=False)


def test_text_encoder_is_the_clip_text_tower(smoke_clip):
    model, tokenizer = clip_text_model(smoke_clip), clip_tokenizer(smoke_clip)
    ids = tokenizer(TEXTS, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    ours, mask = smoke_clip.token_states(TEXTS)
    with torch.no_grad():
        theirs = model(ids).last_hidden_state
    assert theirs.shape == ours.shape and mask.sum() > 0
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)  # every position, padding included
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # A changed weight changes the states: the comparison above can fail.
    with torch.no_grad():
        model.final_layer_norm.bias.add_(0.1)
        assert not torch.allclose(model(ids).last_hidden_state, ours, atol=1e-3)


def test_saved_folder_loads_through_the_hub_loader_and_draws(saved, tmp_path):
    from diffusers import StableDiffusionPipeline

    sd = load_generator(str(saved), device="cpu")
    assert type(sd) is StableDiffusionPipeline and sd.safety_checker is None
    manifest = json.loads((saved / "llmimg.json").read_text())
    assert manifest["stage"] == offline.STAGE and manifest["upstream"]["clip"].startswith("clip-")
    assert {"all_correct", "all_correct_se", "two_object_all_correct"} <= set(manifest["metrics"])
    # The other two slots from the tiny random models: the generator slot is what is tested here.
    tiny = tiny_components(tmp_path / "tiny")
    pipe = PretrainedPipeline(load_clip(tiny.clip_model, None, device="cpu"), load_writer(tiny.llm, device="cpu"),
                              sd, PretrainedConfig(**offline.SAMPLING, max_new_tokens=8, num_candidates=2))
    prompts = ["a small green cross", "a large red circle in the top left"]
    a = pipe(prompts, generator=torch.Generator().manual_seed(0), upsample=False, output_type="np")
    b = pipe(prompts, generator=torch.Generator().manual_seed(0), upsample=False, output_type="np")
    assert a.images.shape == (2, 32, 32, 3) and (a.images == b.images).all()
    assert a.descriptions == prompts and "denoise" in a.timings
    upsampled = pipe(prompts[:1], generator=torch.Generator().manual_seed(1), num_inference_steps=2)
    assert upsampled.images[0].size == (32, 32)


def test_training_conditions_on_what_encode_prompt_gives(saved):
    sd = load_generator(str(saved), device="cpu")
    table = offline.prompt_states(sd, TEXTS)
    embeds, negative = sd.encode_prompt(TEXTS[:2], torch.device("cpu"), 1, True)
    torch.testing.assert_close(table[:2], embeds)
    torch.testing.assert_close(table[2:].expand(2, -1, -1), negative)  # "" is the unconditional text


def test_resaving_replaces_the_model_and_keeps_other_files(saved, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(saved, folder)
    (folder / "notes.txt").write_text("mine")
    offline.save_generator(folder, "smoke", progress=False)
    assert (folder / "notes.txt").read_text() == "mine"
    load_generator(str(folder), device="cpu")


def test_a_foreign_folder_is_refused(smoke_clip, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        offline.save_generator(folder, "smoke", progress=False)
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


def test_a_damaged_cached_model_is_refused_naming_the_retrain_command(saved, smoke_clip, tmp_path, monkeypatch):
    # A copy of the session cache, damaged there: the other tests keep theirs.
    from llmimg.core.config import cache_dir

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir("smoke").parent, cache)
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(cache))
    folder = offline.cached_generator("smoke", progress=False)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(CheckpointError) as err:
        offline.save_generator(tmp_path / "out", "smoke", progress=False)
    message = str(err.value)
    assert "\n" not in message and offline.RETRAIN in message and folder.name in message
    assert not (tmp_path / "out").exists()


def test_config_checks_its_shape():
    with pytest.raises(ValueError, match="cannot be halved"):
        offline.OfflineGeneratorConfig(vae_block_out_channels=(8, 8, 8, 8, 8), unet_block_out_channels=(8, 8, 8))
    config = offline.default_config("default")
    assert config.latent_size == 16 and offline.OfflineGeneratorConfig.from_dict(config.as_dict()) == config
