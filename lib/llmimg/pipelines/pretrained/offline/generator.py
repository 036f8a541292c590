"""The offline image generator: a real Stable Diffusion pipeline trained on ShapesWorld.

Offline, the pretrained pipeline's generator slot gets a ``StableDiffusionPipeline`` made
of the parts Stable Diffusion is made of, each trained here on ShapesWorld:

* **text encoder**: the course's trained CLIP text tower (stage 1) as a frozen
  transformers ``CLIPTextModel`` with the course tokenizer (:mod:`.text_encoder`), as SD 2
  freezes OpenCLIP's;
* **VAE**: a small ``AutoencoderKL`` trained on the 32×32 images (16×16×4 latents;
  L1 reconstruction error with the object pixels weighted up, plus a small KL term), its
  ``scaling_factor`` set to one over the latents' standard deviation, as Stable
  Diffusion's was. It decodes the posterior *mean* in training, and the UNet learns the
  means: with sampled latents, or with every pixel weighted alike, 400–800 steps learnt
  grey blobs on the black background (5% of reconstructions judged right, against 90%
  for this recipe at 600 steps);
* **UNet**: a ``UNet2DConditionModel`` trained on the scaled VAE latents, conditioned on
  exactly what ``StableDiffusionPipeline.encode_prompt`` gives for the training
  descriptions (padding included: SD's UNet attends to every token), the text replaced
  by ``""`` with probability ``cond_dropout`` so classifier-free guidance works. It also
  reads an attention-pooled summary of the text through its timestep embedding
  (diffusers' ``addition_embed_type="text"``), the global path the course's generator
  gets from its pooled text;
* **scheduler**: DPM-Solver++ over the training noise schedule, saved in the pipeline.

The objective follows the course's generator (``llmimg.stages.generator``, whose recipe
search on this world chose it): the UNet predicts the clean latent (``"sample"``), on a
cosine schedule with trailing timesteps, weighted by Min-SNR-γ; there the epsilon target
failed outright. :func:`save_generator` writes the profile's trained pipeline into a
folder that ``AutoPipelineForText2Image.from_pretrained`` (and so
:func:`~llmimg.pipelines.pretrained.load_generator`) loads; it is trained once per
profile and CLIP into the model cache. :data:`SAMPLING` is how it is meant to be called.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.folders import first_line, json_says, save_into
from llmimg.core.store import (MANIFEST, CheckpointError, Manifest, cache_key, cached, quiet_libraries,
                               read_manifest, write_manifest)
from llmimg.core.training import StageConfig, TrainConfig, cadence, fit
from llmimg.pipelines.pretrained.offline.text_encoder import clip_text_model, clip_tokenizer
from llmimg.stages import clip as clip_stage
from llmimg.stages.generator.train import diffusion_loss

STAGE = "offline-generator"
FORMAT = 2  # bump when a change to this module changes what a trained pipeline is
RETRAIN = "llmimg pretrained offline --force -o DIR"
IMAGE_SIZE = 32
# How the trained pipeline draws: 20 DPM-Solver++ steps with guidance 3 (the course generator's guidance).
SAMPLING: dict[str, Any] = {"num_inference_steps": 20, "guidance_scale": 3.0}


@dataclass(frozen=True)
class OfflineGeneratorConfig(StageConfig):
    """Everything that defines the trained offline Stable Diffusion pipeline (its CLIP aside: the cache key's upstream).

    ``vae_*`` shape the autoencoder (each block after the first halves the image: two
    blocks give 16×16 latents of ``latent_channels``, as SD's 4 channels); ``kl_weight``
    weighs its KL term.
    ``unet_*`` shape the UNet (``unet_heads`` attention heads per block; diffusers calls
    it ``attention_head_dim``). Both train on ``n_train`` ShapesWorld ``train`` scenes
    (at most ``max_objects`` objects) of seed ``data_seed``, the UNet on their full
    descriptions.
    """

    vae_block_out_channels: tuple[int, ...] = (16, 32)
    vae_norm_num_groups: int = 16
    latent_channels: int = 4
    kl_weight: float = 1e-6
    foreground_weight: float = 10.0  # extra weight of the object pixels in the VAE's L1 error (they are ~5% of them)
    vae_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=64, lr=2e-3))
    unet_block_out_channels: tuple[int, ...] = (32, 64, 128)
    unet_down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    unet_up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    unet_norm_num_groups: int = 32
    unet_heads: int = 4
    pooled_text: bool = True
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"
    snr_gamma: float | None = 5.0
    cond_dropout: float = 0.1
    unet_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=64, lr=2e-3))
    data_seed: int = 0
    n_train: int = 10_000
    max_objects: int = 2
    eval_n: int = cadence(300)  # val descriptions scored per object count after training (0: none)

    def __post_init__(self) -> None:
        for name in ("vae_block_out_channels", "unet_block_out_channels", "unet_down_block_types",
                     "unet_up_block_types"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("vae_train", "unet_train"):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, TrainConfig(**getattr(self, name)))
        if IMAGE_SIZE % 2 ** (len(self.vae_block_out_channels) - 1):
            raise ValueError(f"{len(self.vae_block_out_channels)} VAE blocks cannot halve a {IMAGE_SIZE}-pixel image")
        if self.latent_size % 2 ** (len(self.unet_block_out_channels) - 1):
            raise ValueError(f"a {self.latent_size}-pixel latent cannot be halved "
                             f"{len(self.unet_block_out_channels) - 1} times; use fewer UNet blocks")
        if not len(self.unet_block_out_channels) == len(self.unet_down_block_types) == len(self.unet_up_block_types):
            raise ValueError("unet_block_out_channels, unet_down_block_types and unet_up_block_types need one length")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout is a probability below 1, got {self.cond_dropout}")
        if self.n_train <= 0 or self.eval_n < 0:
            raise ValueError(f"n_train must be positive and eval_n non-negative, got {self.n_train}, {self.eval_n}")

    @property
    def latent_size(self) -> int:
        return IMAGE_SIZE // 2 ** (len(self.vae_block_out_channels) - 1)


def default_config(profile: str | Profile | None = None) -> OfflineGeneratorConfig:
    """The pipeline each profile trains: seconds at ``smoke``, minutes on 2 CPU cores at ``default``, GPU: ``full``."""
    p = get_profile(profile)
    return OfflineGeneratorConfig(
        vae_block_out_channels=p.pick(smoke=(8, 16), default=(16, 32), full=(32, 64)),
        vae_norm_num_groups=p.pick(smoke=8, default=16, full=32),
        vae_train=p.pick(smoke=TrainConfig(steps=10, batch_size=16, lr=1e-3, warmup_steps=2),
                         default=TrainConfig(steps=1000, batch_size=32, lr=3e-3, warmup_steps=20),
                         full=TrainConfig(steps=5000, batch_size=128, lr=5e-4, warmup_steps=200)),
        unet_block_out_channels=p.pick(smoke=(16, 32), default=(32, 64, 128), full=(128, 256, 256)),
        unet_down_block_types=p.pick(smoke=("DownBlock2D", "CrossAttnDownBlock2D"),
                                     default=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                     full=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")),
        unet_up_block_types=p.pick(smoke=("CrossAttnUpBlock2D", "UpBlock2D"),
                                   default=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                   full=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
        unet_norm_num_groups=p.pick(smoke=8, default=32, full=32),
        unet_heads=p.pick(smoke=2, default=4, full=8),
        unet_train=p.pick(smoke=TrainConfig(steps=10, batch_size=16, lr=1e-3, warmup_steps=2),
                          default=TrainConfig(steps=2400, batch_size=64, lr=2e-3, warmup_steps=50),
                          full=TrainConfig(steps=30_000, batch_size=256, lr=3e-4, warmup_steps=500)),
        n_train=p.pick(smoke=256, default=10_000, full=100_000),
        eval_n=p.pick(smoke=4, default=300, full=1000))


def key(config: OfflineGeneratorConfig, clip: clip_stage.ShapesCLIP) -> dict:
    """The cache key of the pipeline trained with ``config`` on ``clip``'s text tower (its cache folder: upstream)."""
    upstream = {"clip": Path(clip.path).name} if clip.path is not None else {}
    return cache_key(STAGE, FORMAT, config.identity(), upstream)


# -- the parts ----------------------------------------------------------------------------------------------
def build_vae(config: OfflineGeneratorConfig) -> Any:
    """An untrained ``AutoencoderKL`` of ``config``'s shape for 32×32 RGB images."""
    from diffusers import AutoencoderKL

    n = len(config.vae_block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=config.latent_channels,
                         block_out_channels=config.vae_block_out_channels, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=config.vae_norm_num_groups, sample_size=IMAGE_SIZE)


def build_unet(config: OfflineGeneratorConfig, cross_attention_dim: int) -> Any:
    """An untrained ``UNet2DConditionModel`` of ``config``'s shape on the VAE's latents."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=config.latent_channels, out_channels=config.latent_channels,
        down_block_types=config.unet_down_block_types, up_block_types=config.unet_up_block_types,
        block_out_channels=config.unet_block_out_channels, layers_per_block=1,
        attention_head_dim=config.unet_heads, norm_num_groups=config.unet_norm_num_groups,
        cross_attention_dim=cross_attention_dim,
        # SD's pipeline passes the UNet nothing but the text states, so the pooled text enters as diffusers'
        # "text" addition embedding: an attention pooling of those same states, added to the timestep embedding.
        addition_embed_type="text" if config.pooled_text else None,
        addition_embed_type_num_heads=config.unet_heads)


def noise_schedule(config: OfflineGeneratorConfig) -> dict[str, Any]:
    """The training noise schedule, shared by the DDPM scheduler that noises and the sampler saved in the pipeline."""
    return dict(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                prediction_type=config.prediction_type, timestep_spacing="trailing")


def build_sampler(config: OfflineGeneratorConfig) -> Any:
    """DPM-Solver++ (second order) on the training schedule: the scheduler the saved pipeline samples with."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**noise_schedule(config), algorithm_type="dpmsolver++", solver_order=2,
                                       steps_offset=1)  # what StableDiffusionPipeline insists on (unused when trailing)


def assemble(config: OfflineGeneratorConfig, clip: clip_stage.ShapesCLIP, vae: Any, unet: Any) -> Any:
    """The ``StableDiffusionPipeline`` of these parts, with no safety checker (ShapesWorld draws only shapes)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=clip_text_model(clip), tokenizer=clip_tokenizer(clip),
                                   unet=unet, scheduler=build_sampler(config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- training -----------------------------------------------------------------------------------------------
@dataclass
class Bank:
    """The training scenes, rendered once: images in [-1, 1] ``(N, 3, 32, 32)`` and their descriptions."""

    images: torch.Tensor
    descriptions: list[str]

    def __len__(self) -> int:
        return len(self.descriptions)


def make_bank(config: OfflineGeneratorConfig) -> Bank:
    """Render ``config``'s ``n_train`` ShapesWorld ``train`` scenes (the course generator's data)."""
    samples = list(ShapesWorld(seed=config.data_seed, max_objects=config.max_objects).samples(config.n_train, "train"))
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return Bank(images.contiguous(), [s.description for s in samples])


def train_vae(config: OfflineGeneratorConfig, bank: Bank, *, work_dir: Path | None = None, progress: bool = True,
              device: str | torch.device | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Train the autoencoder on the bank's images: L1 error (object pixels weighted up) plus ``kl_weight`` × KL.

    Returns the VAE (on the CPU, eval mode, its ``scaling_factor`` still 1) and its loss history.
    """
    with seeding.isolated(config.vae_train.seed, "init"):
        vae = build_vae(config)
    n, size = len(bank), config.vae_train.batch_size

    def batch(step: int) -> dict[str, torch.Tensor]:
        g = seeding.torch_generator(config.vae_train.seed, "batch", step)
        return {"images": bank.images[torch.randint(n, (size,), generator=g)]}

    def loss(model: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
        posterior = model.encode(b["images"]).latent_dist
        recon = model.decode(posterior.mean).sample
        # The background is black (-1); everything brighter belongs to an object.
        weight = 1.0 + config.foreground_weight * (b["images"] > -0.99).any(dim=1, keepdim=True).float()
        return ((recon - b["images"]).abs() * weight).mean() + config.kl_weight * posterior.kl().mean()

    result = fit(vae, batch, loss, config.vae_train, work_dir=work_dir, desc="offline VAE", device=device,
                 progress=progress, meta={"offline-vae": config.identity()})
    return result.model.cpu().eval().requires_grad_(False), result.history


@torch.no_grad()
def encode_bank(vae: Any, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """The posterior means of ``images`` (unscaled latents: what the UNet learns), computed once in chunks."""
    return torch.cat([vae.encode(images[start:start + chunk]).latent_dist.mean
                      for start in range(0, len(images), chunk)])


@torch.no_grad()
def prompt_states(pipe: Any, texts: list[str], chunk: int = 500) -> torch.Tensor:
    """The text states ``pipe.encode_prompt`` gives for ``texts``: what the UNet reads when the pipeline draws."""
    states = [pipe.encode_prompt(texts[s:s + chunk], torch.device("cpu"), 1, False)[0] for s in range(0, len(texts),
                                                                                                      chunk)]
    return torch.cat(states).float()


def train_unet(config: OfflineGeneratorConfig, pipe: Any, bank: Bank, *, work_dir: Path | None = None,
               progress: bool = True, device: str | torch.device | None = None) -> list[dict[str, Any]]:
    """Train ``pipe.unet`` in place on ``pipe.vae``'s scaled latents of the bank; returns the loss history.

    The text states are a lookup table made once with ``pipe.encode_prompt`` (row 0 is
    ``""``, the unconditional text the pipeline's guidance uses), so training and sampling
    read exactly the same states.
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**noise_schedule(config))
    means = encode_bank(pipe.vae, bank.images)
    scale = pipe.vae.config.scaling_factor
    table = prompt_states(pipe, ["", *bank.descriptions])
    n, size = len(bank), config.unet_train.batch_size

    def batch(step: int) -> dict[str, torch.Tensor]:
        # The batch streams go on where the VAE's stopped: the two parts never draw the same numbers.
        g = seeding.torch_generator(config.unet_train.seed, "batch", config.vae_train.steps + step)
        idx = torch.randint(n, (size,), generator=g)
        latents = means[idx] * scale  # the posterior means, which the VAE learnt to decode
        drop = torch.rand(size, generator=g) < config.cond_dropout
        return {"latents": latents, "noise": torch.randn(latents.shape, generator=g),
                "timesteps": torch.randint(config.num_train_timesteps, (size,), generator=g),
                "states": table[torch.where(drop, 0, 1 + idx)]}

    def loss(unet: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
        noisy = scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        pred = unet(noisy, b["timesteps"], encoder_hidden_states=b["states"]).sample
        return diffusion_loss(config, scheduler, pred, b)  # the course generator's loss

    pipe.unet.train().requires_grad_(True)
    result = fit(pipe.unet, batch, loss, config.unet_train, work_dir=work_dir, desc="offline UNet", device=device,
                 progress=progress, meta={"offline-unet": config.identity()})
    pipe.unet = result.model.cpu().eval().requires_grad_(False)
    return result.history


def train(config: OfflineGeneratorConfig, clip: clip_stage.ShapesCLIP, *, work_dir: str | Path | None = None,
          progress: bool = True, device: str | torch.device | None = None) -> tuple[Any, Manifest]:
    """Train the VAE, then the UNet, on ShapesWorld; the assembled pipeline and its manifest (not saved).

    ``work_dir`` keeps resumable checkpoints of each part. The VAE's ``scaling_factor``
    is one over the standard deviation of the training latents, as Stable Diffusion set its own.
    """
    t0 = time.perf_counter()
    work = Path(work_dir) if work_dir is not None else None
    bank = make_bank(config)
    vae, vae_history = train_vae(config, bank, work_dir=work and work / "vae", progress=progress, device=device)
    vae_seconds = time.perf_counter() - t0
    std = float(encode_bank(vae, bank.images[:2000]).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    with seeding.isolated(config.unet_train.seed, "init"):
        unet = build_unet(config, clip.width)
    pipe = assemble(config, clip, vae, unet)
    unet_history = train_unet(config, pipe, bank, work_dir=work and work / "unet", progress=progress, device=device)
    seconds = time.perf_counter() - t0
    manifest = Manifest(STAGE, FORMAT, config.as_dict(), upstream=key(config, clip)["upstream"],
                        history=unet_history, seconds=seconds,
                        extra={"vae_history": vae_history, "vae_seconds": vae_seconds,
                               "unet_seconds": seconds - vae_seconds, "latent_std": std})
    return pipe, manifest


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(folder: str | os.PathLike, n: int, *, seed: int = 0, batch_size: int = 100,
             sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """ShapesEval of the pipeline in ``folder`` on ``n`` one-object and ``n`` two-object ``val`` descriptions.

    The folder is loaded through :func:`~llmimg.pipelines.pretrained.load_generator` (the
    hub loader) on the CPU and drawn through :class:`~llmimg.pipelines.pretrained.PretrainedPipeline`
    without upsampling (the description goes straight to the generator); image ``k``
    draws its noise from ``(seed, "noise", k)``. Each rate comes with its standard error.
    """
    from llmimg.core.evaluation import shapes_eval, standard_error
    from llmimg.pipelines.pretrained.models import PretrainedConfig, load_generator
    from llmimg.pipelines.pretrained.pipeline import PretrainedPipeline

    sampling = {**SAMPLING, **(sampling or {})}
    with quiet_libraries():
        sd = load_generator(str(folder), device="cpu")
    pipe = PretrainedPipeline(None, None, sd, PretrainedConfig(**sampling))  # no LLM, no re-ranking: not used
    out: dict[str, Any] = {"n": n, "seed": seed, "scheduler": type(sd.scheduler).__name__, **sampling}
    t0 = time.perf_counter()
    for objects, prefix in ((1, ""), (2, "two_object_")):
        world = ShapesWorld(seed=0, max_objects=objects)
        samples = [s for s in world.samples(n if objects == 1 else 4 * n, "val") if len(s.scene) == objects][:n]
        descriptions = [s.description for s in samples]
        generators = seeding.noise_generators(seed, len(descriptions))
        images = []
        for start in range(0, len(descriptions), batch_size):
            chunk = slice(start, start + batch_size)
            images.append(pipe(descriptions[chunk], generator=generators[chunk], upsample=False,
                               output_type="np").images)
        judged = shapes_eval(np.concatenate(images), descriptions)
        out.update({f"{prefix}all_correct": judged.all_correct,
                    f"{prefix}all_correct_se": standard_error(judged.all_correct, len(descriptions)),
                    f"{prefix}count_accuracy": judged.count_accuracy,
                    f"{prefix}per_attribute": judged.per_attribute})
        if objects == 1:  # what the VAE keeps of real renders (encoded, decoded): a check of the autoencoder alone
            real = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.no_grad():
                recon = sd.vae.decode(sd.vae.encode(real).latent_dist.mean).sample
            judged = shapes_eval(((recon.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy(), descriptions)
            out["vae_reconstruction_all_correct"] = judged.all_correct
    out["seconds"] = time.perf_counter() - t0
    return out


# -- the cache and the user's folder ------------------------------------------------------------------------
def cached_generator(profile: str | Profile | None = None, *, config: OfflineGeneratorConfig | None = None,
                     clip: clip_stage.ShapesCLIP | None = None, force: bool = False,
                     progress: bool = True) -> Path:
    """The cache folder of the profile's trained pipeline (on the profile's CLIP), trained and evaluated if missing."""
    profile = get_profile(profile)
    config = config or default_config(profile)
    clip = clip or clip_stage.get(profile, progress=progress)

    def build_into(out: Path, work: Path) -> None:
        pipe, manifest = train(config, clip, work_dir=work, progress=progress)
        with quiet_libraries():
            pipe.save_pretrained(out, safe_serialization=True)
        if config.eval_n:
            manifest.metrics = evaluate(out, config.eval_n)
        write_manifest(out, manifest)

    return cached(key(config, clip), build_into, profile=profile, force=force)


def load_cached(path: str | os.PathLike) -> tuple[Any, Manifest]:
    """The pipeline and manifest in a cache folder; a missing, damaged or foreign one is a one-line CheckpointError."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    fix = f"retrain it with `{RETRAIN}`"
    manifest = read_manifest(path, STAGE, fix)  # checks every file against its recorded size and SHA-256
    try:
        with quiet_libraries():
            pipe = StableDiffusionPipeline.from_pretrained(path, use_safetensors=True)
    except Exception as err:  # safetensors, JSON and shape errors all mean a damaged folder
        raise CheckpointError(f"the offline generator in {path.name!r} cannot be loaded ({type(err).__name__}: "
                              f"{first_line(err)}); {fix}") from None
    return pipe, manifest


def save_generator(folder: str | os.PathLike, profile: str | Profile | None = None, *, progress: bool = True,
                   force: bool = False) -> Path:
    """Write the profile's trained Stable Diffusion pipeline into ``folder``; returns the folder.

    The pipeline comes from the model cache, trained there first if missing (on the
    profile's CLIP, which is trained first if missing too; ``force=True`` retrains the
    pipeline). ``folder`` gets ``save_pretrained``'s layout plus ``llmimg.json`` (the
    manifest, with the training time and the ShapesEval metrics) and loads with
    ``AutoPipelineForText2Image.from_pretrained(folder)``. It must be new, empty, or hold
    such a pipeline already (its files are replaced, the user's other files kept); any
    other non-empty folder is refused with nothing written.
    """
    pipe, manifest = load_cached(cached_generator(profile, force=force, progress=progress))

    def write(out: Path) -> None:
        with quiet_libraries():
            pipe.save_pretrained(out, safe_serialization=True)
        write_manifest(out, replace(manifest, files={}))

    return save_into(folder, write, markers=("model_index.json", MANIFEST), what="offline image generator",
                     holds=lambda f: json_says(f / MANIFEST, "stage", STAGE))


__all__ = ["FORMAT", "RETRAIN", "SAMPLING", "STAGE", "Bank", "OfflineGeneratorConfig", "assemble", "build_sampler",
           "build_unet", "build_vae", "cached_generator", "default_config", "encode_bank", "evaluate", "key",
           "load_cached", "make_bank", "noise_schedule", "prompt_states", "save_generator",
           "train", "train_unet", "train_vae"]
