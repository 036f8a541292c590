"""``llmimg.pipelines.pretrained`` offline: the real loading code on tiny random models saved locally, and its errors.

The tiny models come from :func:`llmimg.pipelines.pretrained.tiny_components`, the same builder the
offline notebook uses. The hub ids are only ever tried with the hub switched off.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from llmimg.pipelines import pretrained
from llmimg.core.store import CheckpointError
from llmimg.pipelines.shapes import STAGES
from llmimg.pipelines.pretrained import (PretrainedConfig, PretrainedUnavailableError, load, load_clip, load_generator,
                               load_writer, resolve_precision, revision_of)
from llmimg.pipelines.pretrained.models import FEW_SHOT, INSTRUCTION
from llmimg.core.text import EmptyPromptError

PROMPTS = ["a red cat", "two dogs on a beach"]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> PretrainedConfig:
    """The tiny models, built and saved once for the module; the config names their folders."""
    return pretrained.tiny_components(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pipe(config) -> pretrained.PretrainedPipeline:
    return load(config, device="cpu")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """The hub unreachable and its cache empty, whatever the environment: nothing can be downloaded or found."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


# -- the pipeline, end to end -----------------------------------------------------------
def test_a_call_returns_images_descriptions_and_stage_timings(pipe):
    out = pipe(PROMPTS, generator=seeded())
    assert len(out.images) == 2 and out.images[0].size == (32, 32) and out.images[0].mode == "RGB"
    assert len(out.descriptions) == 2 and all(isinstance(d, str) and d for d in out.descriptions)
    assert list(out.timings) == [*STAGES, "total"]
    assert all(v >= 0 for v in out.timings.values()) and out.timings["llm_generate"] > 0
    assert out.timings["total"] == pytest.approx(sum(out.timings[s] for s in STAGES))


def test_a_seeded_call_repeats_and_leaves_the_global_random_state_alone(pipe):
    state = torch.get_rng_state()
    first = pipe(PROMPTS, generator=seeded(3), output_type="np")
    assert torch.equal(torch.get_rng_state(), state)
    again = pipe(PROMPTS, generator=seeded(3), output_type="np")
    other = pipe(PROMPTS, generator=seeded(4), output_type="np")
    assert first.descriptions == again.descriptions and np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def test_upsampling_leaves_the_noise_as_it_is_without_it(pipe):
    with_llm, without = seeded(5), seeded(5)
    pipe(PROMPTS, generator=with_llm)
    pipe(PROMPTS, generator=without, upsample=False)
    assert torch.equal(with_llm.get_state(), without.get_state())  # the LLM's seed was read, not drawn


def test_without_upsampling_the_prompts_are_drawn_and_the_llm_does_not_run(pipe):
    out = pipe(PROMPTS, generator=seeded(), upsample=False, output_type="pt")
    assert out.descriptions == PROMPTS and out.timings["llm_generate"] == 0
    assert out.images.shape == (2, 3, 32, 32) and 0 <= out.images.min() and out.images.max() <= 1


def test_classifier_free_guidance_and_per_prompt_generators_run(pipe):
    out = pipe(PROMPTS, num_inference_steps=1, guidance_scale=3.0, generator=[seeded(0), seeded(1)],
               output_type="np")
    assert out.images.shape == (2, 32, 32, 3)
    images, descriptions, timings = pipe(PROMPTS[0], generator=seeded(), return_dict=False)
    assert len(images) == len(descriptions) == 1 and "total" in timings


def test_clip_keeps_the_candidate_nearest_the_prompt(pipe):
    up = pipe.upsample(PROMPTS, num_candidates=3, seed=0)
    assert [len(c) for c in up.candidates] == [3, 3] and up.similarities.shape == (2, 3)
    best = up.similarities.argmax(dim=1).tolist()
    assert up.descriptions == [c[i] for c, i in zip(up.candidates, best)]
    single = pipe.upsample(PROMPTS, num_candidates=1, seed=0)
    assert single.similarities is None and single.descriptions == [c[0] for c in single.candidates]


@pytest.mark.parametrize("bad, error", [
    ({"prompt": ""}, EmptyPromptError), ({"prompt": []}, ValueError), ({"prompt": [1]}, TypeError),
    ({"num_inference_steps": 0}, ValueError), ({"guidance_scale": -1.0}, ValueError),
    ({"output_type": "latent"}, ValueError), ({"generator": [torch.Generator()]}, ValueError),
    ({"generator": 42}, TypeError),
])
def test_bad_arguments_are_refused_with_a_reason(pipe, bad, error):
    kwargs = {"prompt": PROMPTS, **bad}
    with pytest.raises(error):
        pipe(**kwargs)


def test_tiny_models_are_the_same_for_the_same_seed(config, tmp_path):
    again = pretrained.tiny_components(tmp_path / "again")
    for a, b in ((config.clip_model, again.clip_model), (config.llm, again.llm), (config.generator, again.generator)):
        files = sorted(p.relative_to(a) for p in Path(a).rglob("*.safetensors"))
        assert files and all((Path(a) / f).read_bytes() == (Path(b) / f).read_bytes() for f in files)


def test_tiny_pipeline_builds_and_draws_offline(tmp_path, offline_hub):
    out = pretrained.tiny_pipeline(tmp_path, seed=1)("a blue square", generator=seeded())
    assert len(out.images) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["clip", "generator", "llm"]


# -- the loaders, on local folders ------------------------------------------------------
def test_clip_loads_from_its_folder_and_scores_images(config, pipe):
    clip = load_clip(config.clip_model, device="cpu")
    z = clip.encode_text(PROMPTS)
    assert z.shape == (2, 16) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    images = pipe(PROMPTS, generator=seeded(), upsample=False).images
    scores = clip.score(images, PROMPTS)
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 100)).all()
    with pytest.raises(ValueError, match="2 images for 1 texts"):
        clip.score(images, PROMPTS[:1])


@pytest.mark.parametrize("kind", pretrained.tiny.WRITER_KINDS)
def test_every_kind_of_language_model_writes_candidates(kind, tmp_path):
    writer = load_writer(pretrained.tiny_writer(tmp_path / kind, kind), device="cpu")
    assert writer.kind == kind
    written = writer.write(PROMPTS, 2, seeds=[0, 1], max_new_tokens=8)
    assert [len(c) for c in written] == [2, 2] and all(isinstance(t, str) and t for c in written for t in c)
    assert written == writer.write(PROMPTS, 2, seeds=[0, 1], max_new_tokens=8)
    # each prompt's candidates come from its own seed: alone, the second prompt writes the same ones
    assert writer.write(PROMPTS[1:], 2, seeds=[1], max_new_tokens=8) == written[1:]
    request = writer.request("a red cat")
    expected = {"chat": INSTRUCTION.format(prompt="a red cat"), "plain": FEW_SHOT.format(prompt="a red cat"),
                "seq2seq": INSTRUCTION.format(prompt="a red cat")}[kind]
    assert expected in request and (kind == "chat") == request.startswith("<|im_start|>user\n")


def test_the_generator_loads_through_auto_pipeline(config):
    from diffusers import StableDiffusionPipeline

    sd = load_generator(config.generator, device="cpu", attention_slicing=True)
    assert isinstance(sd, StableDiffusionPipeline) and sd.device.type == "cpu" and sd.dtype == torch.float32


def test_a_damaged_local_folder_is_a_checkpoint_error(config, tmp_path):
    import shutil

    broken = shutil.copytree(config.llm, tmp_path / "llm")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="not a complete language model"):
        load_writer(str(broken), device="cpu")


# -- hub ids without the hub ------------------------------------------------------------
@pytest.mark.parametrize("loader, model, revision", [
    (load_clip, "ViT-B-32", "openai"),
    (load_writer, PretrainedConfig.llm, None),
    (load_writer, pretrained.LLMS["t5-base"], None),
    (load_generator, PretrainedConfig.generator, None),
])
def test_an_unreachable_hub_model_is_one_line_naming_it_and_what_to_do(offline_hub, loader, model, revision):
    with pytest.raises(PretrainedUnavailableError) as caught:
        loader(model, revision, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and model in message
    assert "not in the local cache" in message and "Colab" in message and "local folder" in message
    assert caught.value.__suppress_context__  # the libraries' tracebacks stay out of the way


def test_a_path_that_is_no_folder_is_not_taken_for_a_hub_id(offline_hub, tmp_path):
    with pytest.raises(PretrainedUnavailableError, match="neither a local folder nor a valid hub id"):
        load_writer(str(tmp_path / "no" / "such" / "folder"), device="cpu")


def test_an_unknown_clip_tag_lists_the_known_ones():
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "no-such-tag", device="cpu")


# -- precision, memory options and the defaults -----------------------------------------
def test_float16_on_the_cpu_is_refused(config):
    with pytest.raises(ValueError, match="float16 on the CPU is refused"):
        resolve_precision("cpu", torch.float16)
    with pytest.raises(ValueError, match="float16 on the CPU"):
        load(config, device="cpu", dtype="fp16")
    assert resolve_precision("cpu") == (torch.device("cpu"), torch.float32)
    assert resolve_precision("cpu", "bfloat16")[1] == torch.bfloat16


def test_offloading_needs_a_gpu():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("cpu", offload=True)


def test_the_defaults_name_real_models_at_pinned_revisions():
    default = PretrainedConfig()
    assert (default.clip_model, default.clip_pretrained) == ("ViT-B-32", "openai")
    assert default.llm == "Qwen/Qwen2.5-0.5B-Instruct" and default.generator == "stabilityai/sd-turbo"
    assert (default.num_inference_steps, default.guidance_scale) == (1, 0.0)
    assert all(re.fullmatch(r"[0-9a-f]{40}", r) for r in pretrained.REVISIONS.values())
    assert revision_of(default.llm) == pretrained.REVISIONS[default.llm] and revision_of("someone/else") == "main"
    assert revision_of(default.generator, "v2") == "v2"
    sd15 = PretrainedConfig.preset(llm="gpt2", generator="sd-1.5", num_candidates=2)
    assert sd15.llm == "openai-community/gpt2" and sd15.guidance_scale > 1 and sd15.num_candidates == 2
    with pytest.raises(ValueError, match="qwen2.5-0.5b"):
        PretrainedConfig.preset(llm="llama")


def test_rebuilding_the_tiny_models_keeps_the_users_files(tmp_path):
    """The tiny models are saved as the stages are: only their own files are replaced, nothing else is removed."""
    folder = tmp_path / "tiny"
    pretrained.tiny_components(folder)
    (folder / "llm" / "README.md").write_text("my notes on this model")
    (folder / "generator" / "samples").mkdir()
    (folder / "notes.txt").write_text("mine")
    config = pretrained.tiny_components(folder, seed=1)
    assert (folder / "llm" / "README.md").read_text() == "my notes on this model"
    assert (folder / "generator" / "samples").is_dir() and (folder / "notes.txt").read_text() == "mine"
    assert load_writer(config.llm, device="cpu").write(["a cat"], 1, seeds=[0], max_new_tokens=2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not empty and holds no saved language model.*nothing was written"):
        pretrained.tiny_writer(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    (mine / "config.json").write_text('{"model_type": "bert"}')  # the project's own config, another model's
    with pytest.raises(ValueError, match="holds no saved language model"):
        pretrained.tiny_writer(mine)
    assert (mine / "config.json").read_text() == '{"model_type": "bert"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "tiny"]  # no staging folder left
