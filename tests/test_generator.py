"""Tests of stage 3, the diffusion generator (llmimg.stages.generator).

A tiny duck-typed text encoder stands in for the CLIP text tower, so these tests
depend on nothing but the generator, the tokenizer and the training loop. One tiny
generator is trained once per module and shared.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from llmimg.stages import generator as G
from llmimg.core.store import CheckpointError, read_manifest
from llmimg.core.text import UnknownWordsError, encode, shapes_texts, train_tokenizer
from llmimg.core.training import TrainConfig

WIDTH = 16


class FakeTextEncoder:
    """Token states = a fixed random embedding of each token plus a position embedding."""

    def __init__(self, width: int = WIDTH, seed: int = 0) -> None:
        self.tokenizer = train_tokenizer(shapes_texts(300))
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(len(self.tokenizer.get_vocab()), width, generator=g)
        self.positions = 0.1 * torch.randn(self.tokenizer.model_max_length, width, generator=g)
        self.width = width
        self.path = Path("/nowhere/fake-clip-0123456789")
        self.stage = "clip"
        self.calls = 0

    def token_states(self, texts, check=False):
        self.calls += 1
        enc = encode(self.tokenizer, list(texts), check=check)
        return self.table[enc["input_ids"]] + self.positions, enc["attention_mask"]


def tiny_config(**overrides) -> G.GeneratorConfig:
    base = G.GeneratorConfig(
        block_out_channels=(32, 32), attention_heads=2, norm_num_groups=8, mid_block_type=None,
        unshuffle=2, n_train=64, guidance_scale=2.0,
        train=TrainConfig(steps=30, batch_size=8, lr=2e-3, warmup_steps=3, log_every=5, checkpoint_every=1000))
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def text_encoder() -> FakeTextEncoder:
    return FakeTextEncoder()


@pytest.fixture(scope="module")
def trained(text_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "model"
    torch.set_num_threads(min(2, torch.get_num_threads()))
    generator = G.train(tiny_config(), text_encoder, progress=False, device="cpu")
    generator.save_pretrained(out)
    return out, generator


DESCRIPTIONS = ["a large red circle in the center", "a small blue square in the top left",
                "a large white cross in the bottom right"]


# -- configuration --------------------------------------------------------------------
def test_default_configs_are_valid_and_roundtrip():
    for profile in ("smoke", "default", "full"):
        config = G.default_config(profile)
        again = G.GeneratorConfig.from_dict(json.loads(json.dumps(config.as_dict())))
        assert again == config
    assert G.default_config("smoke").train.steps <= 50


@pytest.mark.parametrize("bad", [
    {"unshuffle": 3}, {"block_out_channels": (32,)}, {"cond_dropout": 1.0}, {"guidance_scale": -1.0},
    {"block_out_channels": (30, 30)}, {"prediction_type": "x"}, {"n_train": 0},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


# -- the latent space and the UNet ------------------------------------------------------
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_latents_are_space_to_depth_and_invert_exactly(factor):
    images = torch.randint(0, 256, (2, 3, 32, 32)).float() / 255
    latents = G.to_latents(images, factor)
    assert latents.shape == (2, 3 * factor**2, 32 // factor, 32 // factor)
    # independent check of the layout: channel c*r*r + i*r + j at (h, w) is pixel (h*r+i, w*r+j) of channel c
    c, i, j, h, w = 2, factor - 1, 0, 3, 5
    assert latents[1, c * factor * factor + i * factor + j, h, w] == pytest.approx(
        2 * images[1, c, h * factor + i, w * factor + j].item() - 1, abs=1e-6)
    assert latents.min() >= -1 and latents.max() <= 1
    torch.testing.assert_close(G.to_images(latents, factor), images, atol=1e-6, rtol=0)


def test_unet_forward_shape(text_encoder):
    config = tiny_config(unshuffle=4)
    unet = G.build_unet(config, text_encoder.width)
    x = torch.randn(3, 48, 8, 8)
    states, mask = text_encoder.token_states(DESCRIPTIONS)
    out = G.unet_output(unet, x, torch.tensor([0, 500, 999]), states, mask)
    assert out.shape == x.shape
    # the pooled text is each text's <eos> state
    last = mask.sum(1) - 1
    assert torch.equal(G.pooled_text(states, mask)[1], states[1, last[1]])
    gen = G.ShapesGenerator(unet, G.build_scheduler(config), text_encoder, config)
    assert gen.predict_noise(x, 10, DESCRIPTIONS).shape == x.shape


def test_width_mismatch_is_refused(text_encoder):
    config = tiny_config()
    with pytest.raises(ValueError, match="width"):
        G.ShapesGenerator(G.build_unet(config, 8), G.build_scheduler(config), text_encoder, config)


# -- training ---------------------------------------------------------------------------
def test_batches_are_a_pure_function_of_the_step(text_encoder):
    config = tiny_config(cond_dropout=0.5)
    bank = G.make_bank(config)
    batch = G.make_batch_fn(config, text_encoder, bank)
    a, b, c = batch(3), batch(3), batch(4)
    for key in ("latents", "noise", "timesteps", "states", "mask"):
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["noise"], c["noise"])
    # dropped conditions are the empty text: <bos> <eos>
    assert (a["mask"].sum(1) == 2).any() and (a["mask"].sum(1) > 2).any()
    # the bank holds real renders: black background, values 0..255
    assert bank.images.dtype == torch.uint8 and bank.images.shape == (64, 3, 32, 32)


@pytest.mark.parametrize("prompt_rate", [0.0, 0.5])
def test_precomputed_text_states_are_the_encoders_own(text_encoder, prompt_rate):
    """The lookup table gives each row the states the encoder gives its text, cut to the batch's longest."""
    config = tiny_config(cond_dropout=0.3, prompt_rate=prompt_rate)
    bank = G.make_bank(config)
    with_table = G.make_batch_fn(config, text_encoder, bank)
    calls = text_encoder.calls
    texts = G.make_batch_fn(config, None, bank)
    for step in range(5):
        b = with_table(step)
        states, mask = text_encoder.token_states(texts(step)["texts"])
        length = int(mask.sum(1).max())
        assert b["states"].shape[1] == length < mask.shape[1]
        torch.testing.assert_close(b["states"], states[:, :length])
        torch.testing.assert_close(b["mask"], mask[:, :length])
    assert text_encoder.calls == calls + 5  # only the direct encodings above: batches never call the encoder


def test_learning_curve_is_recorded(text_encoder, tmp_path):
    config = tiny_config(curve_every=10, curve_n=4, train=replace(tiny_config().train, steps=20))
    generator = G.train(config, text_encoder, progress=False, device="cpu")
    curve = generator.manifest.curve
    assert [p["step"] for p in curve] == [10, 20]
    point = curve[-1]
    assert point["n"] == 4 and 0.0 <= point["all_correct"] <= point["count_accuracy"] <= 1.0
    assert 0 < curve[0]["train_seconds"] < point["train_seconds"] < generator.manifest.seconds
    generator.save_pretrained(tmp_path / "model")
    assert read_manifest(tmp_path / "model", "generator").curve == curve


def test_logging_cadence_is_not_part_of_the_models_identity(text_encoder):
    config = tiny_config()
    other = replace(config, curve_every=7, curve_n=3, train=replace(config.train, log_every=1, checkpoint_every=9))
    assert G.key(other, text_encoder) == G.key(config, text_encoder)
    assert G.key(replace(config, n_train=65), text_encoder) != G.key(config, text_encoder)


def test_training_loss_falls(trained):
    _, generator = trained
    losses = [h["loss"] for h in generator.history]
    assert len(losses) == 6 and [h["step"] for h in generator.history] == [5, 10, 15, 20, 25, 30]
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(np.isfinite(losses))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weighting_matches_formula(text_encoder, kind):
    # Min-SNR-γ (Hang et al. 2023): the x0 error weighted by min(SNR, γ), whatever the UNet predicts.
    config = tiny_config(snr_gamma=5.0, prediction_type=kind)
    scheduler = G.build_scheduler(config)
    torch.manual_seed(0)
    unet = G.build_unet(config, WIDTH)
    b = G.make_batch_fn(config, text_encoder, G.make_bank(config))(0)
    weighted = G.make_loss_fn(config, scheduler)(unet, b)
    with torch.no_grad():
        noisy = scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        pred = G.unet_output(unet, noisy, b["timesteps"], b["states"], b["mask"])
    abar = scheduler.alphas_cumprod[b["timesteps"]].view(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0_hat = {"epsilon": (noisy - s * pred) / a, "v_prediction": a * noisy - s * pred, "sample": pred}[kind]
    snr = (abar / (1 - abar)).flatten()
    x0_error = ((x0_hat - b["latents"]) ** 2).mean(dim=(1, 2, 3))
    expected = (x0_error * torch.minimum(snr, torch.tensor(5.0))).mean()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-3)
    plain = G.make_loss_fn(replace(config, snr_gamma=None), scheduler)(unet, b)
    target = {"epsilon": b["noise"], "v_prediction": a * b["noise"] - s * b["latents"], "sample": b["latents"]}[kind]
    assert plain.item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-5)


def test_coordinate_channels(text_encoder):
    coords = G.coordinate_channels(2, 4)
    assert coords.shape == (2, 2, 4, 4)
    assert coords[0, 0, :, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # row index, top to bottom
    assert coords[1, 1, 0, :].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])  # column index, left to right
    with_coords = G.build_unet(tiny_config(coordinates=True), WIDTH)
    without = G.build_unet(tiny_config(coordinates=False), WIDTH)
    assert with_coords.config.in_channels == 14 and without.config.in_channels == 12
    states, mask = text_encoder.token_states(DESCRIPTIONS[:2])
    x = torch.randn(2, 12, 16, 16)
    for unet in (with_coords, without):
        assert G.unet_output(unet, x, 3, states, mask).shape == x.shape


# -- saving and loading -----------------------------------------------------------------
def test_saved_folder_round_trips(trained, text_encoder):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    path, original = trained
    loaded = G.ShapesGenerator.from_pretrained(path, text_encoder)
    assert loaded.config == tiny_config()
    torch.testing.assert_close(original.generate(DESCRIPTIONS[:2], num_inference_steps=4, seed=3),
                               loaded.generate(DESCRIPTIONS[:2], num_inference_steps=4, seed=3), atol=0, rtol=0)
    # diffusers' own loaders read the folder
    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    assert scheduler.config.beta_schedule == tiny_config().beta_schedule
    assert scheduler.config.num_train_timesteps == 1000
    x = torch.randn(2, 12, 16, 16)
    states, mask = text_encoder.token_states(DESCRIPTIONS[:2])
    with torch.no_grad():
        ref = G.unet_output(original.unet, x, 500, states, mask)
        out = G.unet_output(unet, x, 500, states, mask)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    manifest = read_manifest(path, "generator")
    assert manifest.history == original.history and manifest.upstream == {"clip": "fake-clip-0123456789"}


def _copy(path: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(path, dest)
    return dest


def test_load_errors_are_checkpoint_errors(trained, text_encoder, tmp_path):
    path, _ = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        G.ShapesGenerator.from_pretrained(tmp_path / "nothing", text_encoder)
    no_weights = _copy(path, tmp_path / "no_weights")
    (no_weights / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors missing"):
        G.ShapesGenerator.from_pretrained(no_weights, text_encoder)
    truncated = _copy(path, tmp_path / "truncated")
    weights = truncated / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        G.ShapesGenerator.from_pretrained(truncated, text_encoder)
    garbage = _copy(path, tmp_path / "garbage")
    (garbage / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="damaged"):
        G.ShapesGenerator.from_pretrained(garbage, text_encoder)
    bad_json = _copy(path, tmp_path / "bad_json")
    (bad_json / "llmimg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="llmimg.json"):
        G.ShapesGenerator.from_pretrained(bad_json, text_encoder)
    with pytest.raises(ValueError, match="width"):
        G.ShapesGenerator.from_pretrained(path, FakeTextEncoder(width=8))


# -- evaluation on constructed generators -------------------------------------------------
class PixelClip:
    """A CLIP stand-in for the embedding metrics: images by a fixed projection of their pixels, texts by a hash."""

    def __init__(self, dim: int = 16) -> None:
        self.projection = torch.randn(3 * 32 * 32, dim, generator=torch.Generator().manual_seed(0))

    def encode_image(self, images):
        from llmimg.stages.clip import preprocess

        return torch.nn.functional.normalize(preprocess(images).flatten(1) @ self.projection, dim=-1)

    def encode_text(self, texts):
        import hashlib

        rows = [torch.randn(self.projection.shape[1], generator=torch.Generator().manual_seed(
            int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


class RenderingGenerator:
    """Stands in for a ShapesGenerator: draws each description exactly as ShapesWorld renders it.

    ``edit`` changes each object before it is drawn, to make a generator that is wrong in
    a known way. The descriptions of each call are kept in ``calls``.
    """

    def __init__(self, edit=lambda obj: obj) -> None:
        self.config, self.text_encoder, self.edit, self.calls = G.GeneratorConfig(), PixelClip(), edit, []

    def generate(self, descriptions, **kwargs):
        from llmimg.core.data import Scene, parse_description, render

        self.calls.append(list(descriptions))
        scenes = [Scene(tuple(self.edit(o) for o in parse_description(d))) for d in descriptions]
        return torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255


def test_evaluate_gives_a_perfect_generator_full_marks():
    n = 20
    fake = RenderingGenerator()
    scores = G.evaluate(fake, n=n, num_inference_steps=3)
    one, two = fake.calls
    assert len(one) == len(two) == n
    assert [len(d.split(" and ")) for d in one + two] == [1] * n + [2] * n
    for key in ("judge_accuracy_on_real", "all_correct", "count_accuracy", "two_object_all_correct",
                "two_object_count_accuracy"):
        assert scores[key] == 1.0, key
        assert scores.get(f"{key}_se", 0.0) == 0.0
    assert scores["per_attribute"] == scores["two_object_per_attribute"] == {
        "shape": 1.0, "colour": 1.0, "size": 1.0, "position": 1.0}
    assert scores["clip_score"] == scores["clip_score_real"] > 0  # the very images of the real renders
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6) and scores["cmmd"] == pytest.approx(0.0, abs=1e-9)


def test_evaluate_counts_exactly_the_objects_a_generator_draws_in_the_wrong_colour():
    """A generator that draws every red object blue: colour is wrong on exactly the red objects, nothing else is."""
    from dataclasses import replace

    from llmimg.core.data import parse_description
    from llmimg.core.evaluation import standard_error

    n = 40
    fake = RenderingGenerator(edit=lambda o: replace(o, colour="blue") if o.colour == "red" else o)
    scores = G.evaluate(fake, n=n, num_inference_steps=3)
    one = [parse_description(d) for d in fake.calls[0]]
    two = [parse_description(d) for d in fake.calls[1]]
    red = sum(s.objects[0].colour == "red" for s in one)
    red_objects = sum(o.colour == "red" for s in two for o in s)
    scenes_without_red = sum(all(o.colour != "red" for o in s) for s in two)
    assert 0 < red < n and 0 < red_objects and scenes_without_red < n
    assert scores["judge_accuracy_on_real"] == 1.0  # the real renders are read right
    assert scores["all_correct"] == pytest.approx((n - red) / n)
    assert scores["all_correct_se"] == pytest.approx(standard_error((n - red) / n, n))
    assert scores["count_accuracy"] == 1.0
    assert scores["per_attribute"] == pytest.approx({"shape": 1.0, "colour": (n - red) / n, "size": 1.0,
                                                     "position": 1.0})
    assert scores["two_object_all_correct"] == pytest.approx(scenes_without_red / n)
    assert scores["two_object_count_accuracy"] == 1.0
    assert scores["two_object_per_attribute"] == pytest.approx(
        {"shape": 1.0, "colour": (2 * n - red_objects) / (2 * n), "size": 1.0, "position": 1.0})
    assert scores["clip_score"] != scores["clip_score_real"] and scores["cmmd"] > 0


# -- sampling ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen(trained, text_encoder):
    return G.ShapesGenerator.from_pretrained(trained[0], text_encoder)


def test_every_scheduler_samples(gen):
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           UniPCMultistepScheduler)

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler,
               "euler": EulerDiscreteScheduler, "unipc": UniPCMultistepScheduler}
    assert set(G.SCHEDULERS) == set(classes)
    results = {}
    for name, cls in classes.items():
        sched = G.make_scheduler(name, gen.scheduler.config)
        assert type(sched) is cls and sched.config.beta_schedule == gen.config.beta_schedule
        images = gen.generate(DESCRIPTIONS, num_inference_steps=3, scheduler=name)
        assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
        results[name] = images
    assert not torch.equal(results["ddpm"], results["ddim"])
    assert gen.generate(DESCRIPTIONS[:1], num_inference_steps=7, scheduler="ddim").shape == (1, 3, 32, 32)


def test_guidance_combines_conditional_and_unconditional(gen):
    latents = torch.randn(2, 12, 16, 16)
    states, mask = gen.text_states(DESCRIPTIONS[:2], check=True)
    ustates, umask = gen.text_states([""], check=False)
    t = torch.tensor(600)
    with torch.no_grad():
        cond = G.unet_output(gen.unet, latents, t, states, mask)
        uncond = G.unet_output(gen.unet, latents, t, ustates.expand(2, -1, -1), umask.expand(2, -1))
    for g in (0.0, 1.0, 2.5, 7.0):
        out = G.guided_output(gen.unet, latents, t, states, mask, (ustates, umask), g)
        expected = cond if g <= 1 else uncond + g * (cond - uncond)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond)


def test_seeded_generation_is_deterministic(gen):
    a = gen.generate(DESCRIPTIONS, num_inference_steps=3, scheduler="ddpm", seed=1)
    b = gen.generate(DESCRIPTIONS, num_inference_steps=3, scheduler="ddpm", seed=1)
    c = gen.generate(DESCRIPTIONS, num_inference_steps=3, scheduler="ddpm", seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # image k depends on (seed, k) only, not on the batching
    d = gen.generate(DESCRIPTIONS, num_inference_steps=3, scheduler="ddpm", seed=1, batch_size=1)
    torch.testing.assert_close(a, d, atol=1e-5, rtol=0)
    # a torch.Generator gives one stream for the whole call
    e = gen.generate(DESCRIPTIONS, num_inference_steps=3, generator=torch.Generator().manual_seed(5))
    f = gen.generate(DESCRIPTIONS, num_inference_steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(e, f)


def test_argument_errors(gen):
    with pytest.raises(ValueError, match="num_inference_steps"):
        gen.generate(DESCRIPTIONS, num_inference_steps=0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        gen.generate(DESCRIPTIONS, num_inference_steps=-3)
    with pytest.raises(ValueError, match="num_inference_steps"):
        gen.generate(DESCRIPTIONS, num_inference_steps=1001)
    with pytest.raises(ValueError, match="guidance_scale"):
        gen.generate(DESCRIPTIONS, guidance_scale=-0.5)
    with pytest.raises(ValueError, match="ddpm, ddim, dpm\\+\\+, euler"):
        gen.generate(DESCRIPTIONS, scheduler="heun")
    with pytest.raises(ValueError, match="no descriptions"):
        gen.generate([])
    with pytest.raises(TypeError):
        gen.generate("a red circle")
    with pytest.raises(TypeError, match="generator must be a torch.Generator, a list of them .* got str"):
        gen.generate(DESCRIPTIONS, generator="seed 0")
    with pytest.raises(ValueError, match=f"got 1 generators for {len(DESCRIPTIONS)} descriptions"):
        gen.generate(DESCRIPTIONS, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="batch_size"):
        gen.generate(DESCRIPTIONS, batch_size=0)
    with pytest.raises(UnknownWordsError):
        gen.generate(["a red elephant"])


def test_unconditional_and_trajectory(gen):
    images = gen.generate(["", DESCRIPTIONS[0]], num_inference_steps=2)
    assert images.shape == (2, 3, 32, 32)
    traj = gen.trajectory(DESCRIPTIONS[:2], num_inference_steps=6, n_snapshots=3, scheduler="ddim", seed=4)
    assert traj.steps == [0, 2, 5] and len(traj.timesteps) == 3
    assert traj.timesteps == sorted(traj.timesteps, reverse=True)
    assert traj.samples.shape == traj.predictions.shape == (3, 2, 3, 32, 32)
    torch.testing.assert_close(traj.images, gen.generate(DESCRIPTIONS[:2], num_inference_steps=6, scheduler="ddim",
                                                         seed=4), atol=0, rtol=0)


# -- the cache ----------------------------------------------------------------------------
def test_get_trains_once_then_loads(monkeypatch, tmp_path, text_encoder):
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    calls = []
    real_train = G.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(G, "train", counting_train)
    config = tiny_config(train=replace(tiny_config().train, steps=3))
    first = G.get("smoke", config=config, clip=text_encoder, progress=False)
    second = G.get("smoke", config=config, clip=text_encoder, progress=False)
    assert len(calls) == 1
    folders = [p for p in (tmp_path / "smoke").iterdir() if p.name.startswith("generator-")]
    assert len(folders) == 1
    manifest = read_manifest(folders[0], "generator")
    assert manifest.upstream == {"clip": "fake-clip-0123456789"} and manifest.format == G.FORMAT
    assert len(manifest.history) == 1
    torch.testing.assert_close(first.generate(DESCRIPTIONS[:1], num_inference_steps=2),
                               second.generate(DESCRIPTIONS[:1], num_inference_steps=2), atol=0, rtol=0)


# -- sampling options ---------------------------------------------------------------------
def test_exact_sampling_options_draw_the_same_images(gen, text_encoder):
    plain = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2)
    two_pass = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2,
                            options=G.SamplingOptions(batched_guidance=False))
    torch.testing.assert_close(two_pass, plain, atol=1e-5, rtol=0)
    cache = {}
    calls = text_encoder.calls
    cached = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2, options=G.SamplingOptions(text_state_cache=cache))
    assert text_encoder.calls == calls + 2 and set(cache) == {"", *DESCRIPTIONS}  # "" apart: it skips the check
    again = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2, options=G.SamplingOptions(text_state_cache=cache))
    assert text_encoder.calls == calls + 2  # every text was in the cache
    assert torch.equal(cached, plain) and torch.equal(again, plain)


def test_deep_cache_reuses_deep_features_between_full_steps(gen):
    plain = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2)
    every_step = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2,
                              options=G.SamplingOptions(deep_cache_interval=1))
    assert torch.equal(every_step, plain)
    full_calls = []
    hook = gen.unet.mid_block.register_forward_hook(lambda *a: full_calls.append(1)) if gen.unet.mid_block else \
        gen.unet.down_blocks[-1].register_forward_hook(lambda *a: full_calls.append(1))
    try:
        cached = gen.generate(DESCRIPTIONS, num_inference_steps=4, seed=2,
                              options=G.SamplingOptions(deep_cache_interval=2))
    finally:
        hook.remove()
    assert len(full_calls) == 2  # steps 0 and 2 run the deep blocks, steps 1 and 3 reuse them
    assert not torch.equal(cached, plain) and (cached - plain).abs().mean() < 0.2
    with pytest.raises(ValueError, match="deep_cache_interval"):
        G.SamplingOptions(deep_cache_interval=0)


def test_ddim_steps_along_the_clipped_estimate(gen):
    """DDIM clips x0; stepping along the noise of the *clipped* x0 keeps the implied noise fixed.

    With a (guided) estimate far outside [-1, 1] the unclipped noise made more steps worse
    (notebook 05 once measured 0.79, 0.30, 0.00 all-correct at 5, 10, 25 steps).
    """
    sched = G.make_scheduler("ddim", gen.scheduler.config)
    states, mask = gen.text_states(DESCRIPTIONS[:1], check=True)
    jump = sched.config.num_train_timesteps // 10
    implied = []

    def record(i, t, x):  # the noise that x holds around the clipped estimate x0 = 1 at the next timestep
        if int(t) - jump >= 0:
            a = sched.alphas_cumprod[int(t) - jump]
            implied.append((x - a.sqrt()) / (1 - a).sqrt())
        return x

    import llmimg.stages.generator.model as model

    original = model.guided_output
    model.guided_output = lambda unet, x, *args, **kwargs: torch.full_like(x, 3.0)  # a sample prediction, clipped to 1
    try:
        noise = torch.Generator().manual_seed(0)
        gen.denoise(gen.prepare_latents(1, noise, sched), states, mask, gen.text_states([""], check=False), 10, 3.0,
                    sched, noise, on_step=record)
    finally:
        model.guided_output = original
    assert gen.config.prediction_type == "sample" and len(implied) == 9
    for noise in implied[1:]:
        torch.testing.assert_close(noise, implied[0])


# -- the epsilon-target test (research.noise_error) ---------------------------------------
def test_noise_error_moves_x0_by_the_error_an_epsilon_network_implies(gen):
    from llmimg.research.noise_error import noise_error

    x = torch.randn(2, gen.config.latent_channels, gen.config.latent_size, gen.config.latent_size,
                    generator=torch.Generator().manual_seed(0))
    abar = gen.scheduler.alphas_cumprod.double()
    state = torch.get_rng_state()
    for t in (999, 500):
        clean = gen.predict_noise(x, t, DESCRIPTIONS[:2])
        with noise_error(gen, 0.01, seed=3):
            erring = gen.predict_noise(x, t, DESCRIPTIONS[:2])
        delta = (clean - erring).double() / (0.01 * ((1 - abar[t]) / abar[t]).sqrt())
        assert 0.8 < float(delta.std()) < 1.2 and abs(float(delta.mean())) < 0.2  # sigma * N(0, 1) in epsilon
        with noise_error(gen, 0.01, first_step=False, seed=3):
            spared = gen.predict_noise(x, t, DESCRIPTIONS[:2])
        assert torch.equal(spared, clean) == (t == 999)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the global stream is untouched
    assert "forward" not in vars(gen.unet)  # the UNet is itself again after the block


def test_noise_error_test_pairs_its_arms_and_restores_on_errors(gen):
    from llmimg.research.noise_error import ARMS, noise_error, noise_error_test

    results = noise_error_test(gen, DESCRIPTIONS, sigmas=(0.0,), steps=3)
    assert list(results) == ["clean", *(f"{arm}, sigma 0" for arm in ARMS)]
    assert all(v == results["clean"] for v in results.values())  # sigma 0: the same images, image by image
    with pytest.raises(RuntimeError), noise_error(gen, 0.1):
        raise RuntimeError("interrupted")
    assert "forward" not in vars(gen.unet)
    with pytest.raises(ValueError, match="at least 0"), noise_error(gen, -1.0):
        pass
