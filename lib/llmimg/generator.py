"""Stage 3, the image generator: a text-conditioned diffusion UNet with classifier-free guidance.

The generator draws a ShapesWorld *description* the way Stable Diffusion draws a prompt:

* **Text**: the description goes through a *frozen* text encoder, the tiny CLIP text
  tower of stage 1 (:func:`llmimg.clip.get`), whose per-token hidden states ``(B, 32,
  width)`` and attention mask condition the UNet through cross-attention.
* **"Latent" space**: instead of an autoencoder, a pixel *unshuffle* (space-to-depth):
  the 32×32×3 image in [-1, 1] becomes a ``32/r × 32/r × 3r²`` tensor by moving each
  ``r × r`` patch into channels (``F.pixel_unshuffle``). It is exactly invertible and
  needs no training, and it makes the UNet's feature maps ``r²`` times smaller, which is
  what lets a CPU train it in minutes.
* **Model and objective**: a ``diffusers`` :class:`~diffusers.UNet2DConditionModel`
  trained with the DDPM epsilon objective: noise a latent with
  :meth:`~diffusers.DDPMScheduler.add_noise` at a random timestep and regress the noise.
  With probability ``cond_dropout`` the description is replaced by ``""`` (the text
  ``<bos> <eos>``), so one network learns both the conditional and the unconditional
  noise prediction that classifier-free guidance combines:
  ``eps = eps(x, "") + g · (eps(x, text) − eps(x, ""))``, on when ``g > 1``.
* **Sampling**: any diffusers scheduler built from the training scheduler's config with
  ``from_config``: ``"ddpm"``, ``"ddim"``, ``"dpm++"`` (DPM-Solver++ 2M) and ``"euler"``.

A trained generator is a folder holding ``unet/`` (diffusers ``save_pretrained``, loads
with ``UNet2DConditionModel.from_pretrained``), ``scheduler/`` (the DDPM training
scheduler) and ``generator.json`` (the :class:`GeneratorConfig` and training history).
:func:`get` trains one per profile and configuration into the model cache, once.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from llmimg.checkpoints import CheckpointError, cached, require_folder, write_manifest
from llmimg.config import Profile, get_device, get_profile
from llmimg.training import StageConfig, TrainConfig, fit

STAGE = "generator"
CONFIG_FILE = "generator.json"
UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
REQUIRED_FILES = [f"{UNET_DIR}/config.json", f"{UNET_DIR}/diffusion_pytorch_model.safetensors",
                  f"{SCHEDULER_DIR}/scheduler_config.json", CONFIG_FILE]
IMAGE_SIZE = 32
# Sampler names and the diffusers scheduler classes they stand for.
SCHEDULERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
RETRAIN = "llmimg train generator --force"


class TextEncoder(Protocol):
    """What the generator needs from a text encoder (``llmimg.clip.ShapesCLIP`` provides it).

    ``token_states(texts, check)`` returns the per-token hidden states ``(B, L, width)``
    and the attention mask ``(B, L)`` (1 for real tokens); ``""`` must encode to the
    unconditional text. ``width`` is the states' last dimension.
    """

    width: int

    def token_states(self, texts: list[str], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...


# -- configuration ------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorConfig(StageConfig):
    """Everything that defines a trained generator: the UNet's shape, the noise schedule, the data and training.

    ``attention_heads`` is the number of attention heads per transformer block (diffusers
    calls this argument ``attention_head_dim`` for historical reasons, and uses it as the
    number of heads). ``unshuffle`` is the space-to-depth factor (1 = plain pixels).
    ``snr_gamma`` turns on Min-SNR-γ loss weighting (None = the plain epsilon MSE).
    ``guidance_scale`` is the default of :meth:`ShapesGenerator.generate` for this model.
    The training data are ``n_train`` ShapesWorld ``train`` samples (``max_objects``
    objects at most) of seed ``data_seed``, rendered once into a bank; each training
    text is the sample's full description, or with probability ``prompt_rate`` its
    short prompt (the caption-upsampling experiment of notebook 06 varies this).
    """

    block_out_channels: tuple[int, ...] = (96, 192)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D")
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    layers_per_block: int = 1
    attention_heads: int = 4
    norm_num_groups: int = 32
    unshuffle: int = 4
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    timestep_spacing: str = "trailing"
    prediction_type: str = "sample"
    cond_dropout: float = 0.1
    pooled_condition: bool = True  # also add the text's <eos> state to the timestep embedding (see pooled_text)
    coordinates: bool = True  # give the UNet two extra input channels holding each pixel's (y, x) (see unet_output)
    resnet_time_scale_shift: str = "default"  # "scale_shift": the time/text embedding scales and shifts (FiLM)
    snr_gamma: float | None = 5.0
    guidance_scale: float = 3.0
    data_seed: int = 0
    n_train: int = 10_000
    max_objects: int = 2
    prompt_rate: float = 0.0  # share of training texts that are the short prompt instead of the full description
    # lr 2e-3, not 1e-3: in the recipe search (notebook 05) it learns one object in fewer steps and draws two
    # objects far better at 1,200 steps (all-correct 0.90 against 0.66 on 300 two-object val scenes).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=64, lr=2e-3))
    curve_every: int = 0  # score ShapesEval every this many training steps (0: never), kept in the history
    curve_n: int = 100  # one-object val descriptions per point of that curve

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n):
            raise ValueError(f"block_out_channels, down_block_types and up_block_types need the same length, got "
                             f"{n}, {len(self.down_block_types)}, {len(self.up_block_types)}")
        if self.unshuffle < 1 or IMAGE_SIZE % self.unshuffle:
            raise ValueError(f"unshuffle must divide the image size {IMAGE_SIZE}, got {self.unshuffle}")
        if (IMAGE_SIZE // self.unshuffle) % 2 ** (n - 1):
            raise ValueError(f"a {IMAGE_SIZE // self.unshuffle}-pixel latent cannot be halved {n - 1} times; "
                             "use fewer blocks or a smaller unshuffle factor")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every block_out_channels entry must be a multiple of norm_num_groups="
                             f"{self.norm_num_groups}, got {self.block_out_channels}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout is a probability below 1, got {self.cond_dropout}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be non-negative, got {self.guidance_scale}")
        if not 0.0 <= self.prompt_rate <= 1.0:
            raise ValueError(f"prompt_rate is a probability, got {self.prompt_rate}")
        if self.n_train <= 0:
            raise ValueError(f"n_train must be positive, got {self.n_train}")
        if self.curve_every < 0 or self.curve_n <= 0:
            raise ValueError(f"curve_every must be non-negative and curve_n positive, got {self.curve_every}, "
                             f"{self.curve_n}")

    @property
    def latent_size(self) -> int:
        return IMAGE_SIZE // self.unshuffle

    @property
    def latent_channels(self) -> int:
        return 3 * self.unshuffle**2


def default_config(profile: str | Profile | None = None) -> GeneratorConfig:
    """The generator configuration of a profile.

    * ``smoke``: a tiny UNet trained for 20 steps: checks that the code runs, in seconds.
    * ``default``: the recipe that draws what it is told after 1,200 steps (about 11 minutes on
      a 2-core CPU), scored every 300 steps along the way (notebook 05 plots that curve).
    * ``full``: a wider UNet trained longer, for a GPU.
    """
    profile = get_profile(profile)
    return profile.pick(
        smoke=GeneratorConfig(block_out_channels=(32, 32), attention_heads=2, norm_num_groups=8,
                              mid_block_type=None, n_train=256, curve_every=10, curve_n=8,
                              train=TrainConfig(steps=20, batch_size=16, lr=1e-3, warmup_steps=5, log_every=5)),
        default=GeneratorConfig(curve_every=300),
        full=GeneratorConfig(block_out_channels=(128, 256, 256), layers_per_block=2, attention_heads=8,
                             unshuffle=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                            "CrossAttnDownBlock2D"),
                             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                             n_train=100_000, curve_every=3000, curve_n=200,
                             train=TrainConfig(steps=30_000, batch_size=256, lr=3e-4, warmup_steps=500,
                                               checkpoint_every=1000, log_every=50)),
    )


# -- building blocks ----------------------------------------------------------------
def to_latents(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] → the generator's space: [-1, 1], space-to-depth by ``factor``."""
    x = images * 2.0 - 1.0
    return F.pixel_unshuffle(x, factor) if factor > 1 else x


def to_images(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of :func:`to_latents`, clamped to [0, 1]."""
    x = F.pixel_shuffle(latents, factor) if factor > 1 else latents
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def build_unet(config: GeneratorConfig, cross_attention_dim: int):
    """A freshly initialised ``UNet2DConditionModel`` of ``config``'s shape, reading states of width ``cross_attention_dim``."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels + (2 if config.coordinates else 0),
        out_channels=config.latent_channels,
        down_block_types=config.down_block_types,
        up_block_types=config.up_block_types,
        mid_block_type=config.mid_block_type,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_heads,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=cross_attention_dim,
        resnet_time_scale_shift=config.resnet_time_scale_shift,
        # The pooled text goes through a linear layer into the timestep embedding, which every
        # ResNet block reads: a global path that learns the layout far faster than attention alone.
        class_embed_type="projection" if config.pooled_condition else None,
        projection_class_embeddings_input_dim=cross_attention_dim if config.pooled_condition else None,
    )


def pooled_text(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of each text's last real token (``<eos>``): CLIP's own summary of the whole text (B, width)."""
    last = mask.long().sum(dim=1) - 1
    return states[torch.arange(len(states), device=states.device), last]


def coordinate_channels(n: int, size: int, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Two fixed channels ``(n, 2, size, size)`` holding each pixel's row and column, from -1 to 1 (CoordConv).

    Convolutions and attention are translation-equivariant: without these, the UNet can
    only tell where it is from the zero padding at the borders, and learning "in the top
    left" is slow. With them, position is one linear read-out away.
    """
    line = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    grid = torch.stack(torch.meshgrid(line, line, indexing="ij"))
    return grid.expand(n, 2, size, size)


def unet_output(unet: Any, x: torch.Tensor, t: Any, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The UNet's prediction for ``x`` at ``t`` given text states: cross-attention, plus the pooled text if the UNet takes it.

    A UNet with two input channels more than output channels also reads the pixel
    coordinates (:func:`coordinate_channels`), concatenated after the sample, the way
    Stable Diffusion's inpainting UNet reads its mask channels.
    """
    pooled = pooled_text(states, mask) if unet.config.class_embed_type == "projection" else None
    if unet.config.in_channels == unet.config.out_channels + 2:
        x = torch.cat([x, coordinate_channels(x.shape[0], x.shape[-1], x.device, x.dtype)], dim=1)
    return unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask, class_labels=pooled).sample


def clean_estimate(prediction_type: str, x: torch.Tensor, out: torch.Tensor,
                   abar: float | torch.Tensor) -> torch.Tensor:
    """The clean-image estimate x̂₀ from the UNet's output ``out`` at a sample ``x`` of noise level ``abar``.

    ``abar`` is ᾱ_t, a number or a tensor that broadcasts against ``x`` (one per row).
    """
    if prediction_type == "epsilon":
        x0 = (x - (1 - abar) ** 0.5 * out) / abar**0.5
    elif prediction_type == "v_prediction":
        x0 = abar**0.5 * x - (1 - abar) ** 0.5 * out
    else:
        x0 = out
    return x0.clamp(-1, 1)


def guided_output(unet: Any, x: torch.Tensor, t: Any, states: torch.Tensor, mask: torch.Tensor,
                  uncond: tuple[torch.Tensor, torch.Tensor], guidance_scale: float) -> torch.Tensor:
    """The UNet's output at ``x``, with classifier-free guidance when ``guidance_scale > 1``.

    ``uncond + g · (cond − uncond)`` as in Stable Diffusion, both halves in one batch.
    ``uncond`` is the ``""`` text's states and mask (one row), cut to the states' length
    (its two real tokens fit any); ``t`` is one timestep or one per row.
    """
    if guidance_scale <= 1.0:
        return unet_output(unet, x, t, states, mask)
    b, length = x.shape[0], states.shape[1]
    both_states = torch.cat([uncond[0][:, :length].expand(b, -1, -1), states])
    both_mask = torch.cat([uncond[1][:, :length].expand(b, -1).to(mask.dtype), mask])
    both_t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t
    uncond_out, cond_out = unet_output(unet, torch.cat([x, x]), both_t, both_states, both_mask).chunk(2)
    return uncond_out + guidance_scale * (cond_out - uncond_out)


def build_scheduler(config: GeneratorConfig):
    """The DDPM training scheduler (epsilon prediction, x0 clipped to [-1, 1] when sampling)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=True, clip_sample_range=1.0,
                         timestep_spacing=config.timestep_spacing)


def make_scheduler(name: str, base_config: Any):
    """The sampler ``name`` (one of :data:`SCHEDULERS`) built ``from_config`` of the training scheduler's config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(base_config)


def check_sampling(num_inference_steps: Any, guidance_scale: Any, num_train_timesteps: int) -> None:
    """Refuse, with a ValueError saying why, step counts and guidance scales no sampler can use."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or num_inference_steps <= 0:
        raise ValueError(f"num_inference_steps must be a positive whole number, got {num_inference_steps!r}")
    if num_inference_steps > num_train_timesteps:
        raise ValueError(f"num_inference_steps can be at most the {num_train_timesteps} training timesteps, "
                         f"got {num_inference_steps}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a non-negative number (1 or less: no guidance), "
                         f"got {guidance_scale!r}")


# -- training -----------------------------------------------------------------------
@dataclass
class Bank:
    """A fixed set of training samples: uint8 images ``(N, 3, 32, 32)``, their descriptions and prompts."""

    images: torch.Tensor
    descriptions: list[str]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.descriptions)


def make_bank(config: GeneratorConfig) -> Bank:
    """Render the ``n_train`` training samples of ``config`` once (thousands per second)."""
    from llmimg.data import ShapesWorld

    world = ShapesWorld(seed=config.data_seed, max_objects=config.max_objects)
    samples = list(world.samples(config.n_train, "train"))
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    return Bank(images, [s.description for s in samples], [s.prompt for s in samples])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of training step ``step``: batches depend on (seed, step) alone, so runs resume exactly."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def encode_texts(text_encoder: TextEncoder, texts: list[str], chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen text states ``(N, L, width)`` and masks ``(N, L)`` of unchecked texts, computed once in chunks."""
    states, masks = [], []
    with torch.no_grad():
        for start in range(0, len(texts), chunk):
            s, m = text_encoder.token_states(texts[start:start + chunk], check=False)
            states.append(s.detach().float().cpu())
            masks.append(m.detach().cpu())
    return torch.cat(states), torch.cat(masks)


def make_batch_fn(config: GeneratorConfig, text_encoder: TextEncoder | None, bank: Bank):
    """``batch(step)``: a pure function of the step drawing samples, dropped conditions, noise and timesteps.

    The frozen text encoder runs once, before training, over every text of the bank
    (and ``""``): its states are a lookup table, which saves about an eighth of each
    step. The batch holds the clean latents, the noise, the timesteps and the text
    states with their mask, cut to the longest text in the batch (padding is masked
    anyway, so this changes nothing but the cost of cross-attention). With
    ``text_encoder=None`` it holds the ``texts`` instead, for a model that encodes them
    itself (a text encoder trained along with the UNet).
    """
    n, size = len(bank), config.train.batch_size
    table = None
    if text_encoder is not None:
        table = encode_texts(text_encoder, ["", *bank.descriptions, *(bank.prompts if config.prompt_rate else [])])

    def batch(step: int) -> dict[str, Any]:
        g = step_generator(config.train.seed, step)
        idx = torch.randint(n, (size,), generator=g)
        latents = to_latents(bank.images[idx].float() / 255.0, config.unshuffle)
        drop = torch.rand(size, generator=g) < config.cond_dropout
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(config.num_train_timesteps, (size,), generator=g)
        # Drawn last, and only when used, so that description-only runs keep their old batches.
        short = (torch.rand(size, generator=g) < config.prompt_rate) if config.prompt_rate \
            else torch.zeros(size, dtype=torch.bool)
        out = {"latents": latents, "noise": noise, "timesteps": timesteps, "index": idx}
        if table is None:
            texts = ["" if d else (bank.prompts[i] if p else bank.descriptions[i])
                     for d, p, i in zip(drop.tolist(), short.tolist(), idx.tolist())]
            return {**out, "texts": texts}
        rows = torch.where(drop, 0, 1 + idx + n * short.long())  # row 0 is "", then descriptions, then prompts
        mask = table[1][rows]
        length = int(mask.sum(1).max())
        return {**out, "states": table[0][rows, :length], "mask": mask[:, :length]}

    return batch


def make_loss_fn(config: GeneratorConfig, scheduler: Any):
    """``loss(unet, batch)``: the DDPM epsilon objective (optionally Min-SNR-γ weighted)."""

    def loss(unet: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        noisy = scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        return diffusion_loss(config, scheduler, unet_output(unet, noisy, b["timesteps"], b["states"], b["mask"]), b)

    return loss


def diffusion_loss(config: GeneratorConfig, scheduler: Any, pred: torch.Tensor, b: dict[str, Any]) -> torch.Tensor:
    """The weighted denoising error of the UNet's output ``pred`` on batch ``b`` (what :func:`make_loss_fn` uses)."""
    if config.prediction_type == "epsilon":
        target = b["noise"]
    elif config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(b["latents"], b["noise"], b["timesteps"])
    else:
        target = b["latents"]
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    if config.snr_gamma is None:
        return err.mean()
    abar = scheduler.alphas_cumprod.to(err.device)[b["timesteps"]].float()
    snr = abar / (1 - abar)
    weight = snr.clamp(max=config.snr_gamma) / {"epsilon": snr, "v_prediction": snr + 1, "sample": 1}[
        config.prediction_type]
    return (err * weight).mean()


@dataclass
class TrainOutcome:
    """What :func:`train` returns besides the saved folder: the loss history and the training time."""

    history: list[dict[str, float]]
    seconds: float
    generator: ShapesGenerator
    curve: list[dict[str, float]] = field(default_factory=list)  # ShapesEval along training (config.curve_every)


def train(config: GeneratorConfig, text_encoder: TextEncoder, out_dir: str | Path, *,
          work_dir: str | Path | None = None, progress: bool = True,
          device: str | torch.device | None = None) -> TrainOutcome:
    """Train a generator with :func:`llmimg.training.fit` and save it into ``out_dir``.

    ``out_dir`` receives ``unet/``, ``scheduler/`` and ``generator.json``; the caller
    writes the ``llmimg.json`` manifest (with the returned history). ``work_dir`` keeps
    resumable checkpoints. Batches are a pure function of the step, so an interrupted
    and resumed run trains on the same data as an uninterrupted one.
    """
    t0 = time.perf_counter()
    torch.manual_seed(config.train.seed)  # the UNet's initial weights
    unet = build_unet(config, text_encoder.width)
    scheduler = build_scheduler(config)
    bank = make_bank(config)
    on_step = None
    if config.curve_every:
        from llmimg.data import ShapesWorld

        samples = ShapesWorld(seed=config.data_seed, max_objects=1).samples(config.curve_n, "val")
        descriptions = [s.description for s in samples]

        def on_step(step: int, model: torch.nn.Module) -> dict[str, float] | None:
            if step % config.curve_every and step != config.train.steps:
                return None
            from llmimg.evaluation import shapes_eval

            gen = ShapesGenerator(copy.deepcopy(model), scheduler, text_encoder, config)  # it freezes what it gets
            judged = shapes_eval(gen.generate(descriptions, check=False), descriptions)
            return {"n": config.curve_n, "all_correct": judged.all_correct, "count_accuracy": judged.count_accuracy,
                    **judged.per_attribute}

    setup = time.perf_counter() - t0  # building the bank and encoding its texts counts as training time
    result = fit(unet, make_batch_fn(config, text_encoder, bank), make_loss_fn(config, scheduler), config.train,
                 work_dir=work_dir, desc="generator", device=device, progress=progress,
                 meta={"generator": config.as_dict()}, on_step=on_step)
    seconds = time.perf_counter() - t0
    # The curve's time axis leaves out the time spent scoring it.
    curve = [{**point, "train_seconds": setup + point["train_seconds"]} for point in result.evaluations]
    gen = ShapesGenerator(result.model, scheduler, text_encoder, config)
    gen.save(out_dir, history=result.history, seconds=seconds, curve=curve)
    return TrainOutcome(result.history, seconds, gen, curve)


# -- sampling -----------------------------------------------------------------------
@dataclass
class Trajectory:
    """Snapshots of a denoising run, for pictures of how an image forms.

    ``steps[k]`` is the number of sampler steps taken before snapshot ``k`` (0 = pure
    noise), ``timesteps[k]`` the model timestep there; ``samples[k]`` the current noisy
    sample and ``predictions[k]`` the model's estimate of the final image at that point
    (x0 prediction), both as images ``(B, 3, 32, 32)`` in [0, 1]. ``images`` is the result.
    """

    steps: list[int]
    timesteps: list[float]
    samples: torch.Tensor  # (S, B, 3, 32, 32)
    predictions: torch.Tensor  # (S, B, 3, 32, 32)
    images: torch.Tensor  # (B, 3, 32, 32)


def _image_seed(seed: int, index: int) -> int:
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class ShapesGenerator:
    """A trained generator: UNet, training scheduler, frozen text encoder and config, ready to draw descriptions."""

    def __init__(self, unet: Any, scheduler: Any, text_encoder: TextEncoder, config: GeneratorConfig,
                 device: str | torch.device | None = None) -> None:
        width = unet.config.cross_attention_dim
        if width != text_encoder.width:
            raise ValueError(f"the UNet reads text states of width {width}, but the text encoder gives "
                             f"{text_encoder.width}: it was trained with another text encoder")
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.text_encoder = text_encoder
        self.config = config
        self.path: Path | None = None  # the folder it was loaded from
        self.device = get_device(device)
        self.unet.to(self.device)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"ShapesGenerator(unet={n / 1e6:.2f}M parameters, latent {self.config.latent_channels}×"
                f"{self.config.latent_size}×{self.config.latent_size}, device={self.device})")

    # -- saving -----------------------------------------------------------------------
    def save(self, path: str | Path, **info: Any) -> Path:
        """Save as a generator folder: ``unet/``, ``scheduler/``, ``generator.json`` (config plus ``info``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / UNET_DIR, safe_serialization=True)
        self.scheduler.save_pretrained(path / SCHEDULER_DIR)
        (path / CONFIG_FILE).write_text(json.dumps({"config": self.config.as_dict(), **info}, indent=1),
                                        encoding="utf-8")
        return path

    # -- denoising --------------------------------------------------------------------
    def text_states(self, descriptions: list[str], check: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states of ``descriptions``; ``""`` is the unconditional text and skips the prompt check."""
        full = [d for d in descriptions if d != ""]
        with torch.no_grad():
            uncond, umask = self.text_encoder.token_states([""], check=False)
            states = uncond.float().cpu().repeat(len(descriptions), 1, 1)
            mask = umask.cpu().repeat(len(descriptions), 1)
            if full:
                s, m = self.text_encoder.token_states(full, check=check)
                rows = [k for k, d in enumerate(descriptions) if d != ""]
                states[rows], mask[rows] = s.float().cpu(), m.cpu().to(mask.dtype)
        return states.to(self.device), mask.to(self.device)

    def _validate(self, descriptions: Sequence[str], num_inference_steps: int, guidance_scale: float,
                  scheduler: str, batch_size: int) -> list[str]:
        if isinstance(descriptions, str):
            raise TypeError("descriptions must be a list of strings; wrap a single description in a list")
        descriptions = list(descriptions)
        if not descriptions:
            raise ValueError("no descriptions given: pass a list with at least one description")
        if not all(isinstance(d, str) for d in descriptions):
            raise TypeError("every description must be a string")
        check_sampling(num_inference_steps, guidance_scale, self.config.num_train_timesteps)
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return descriptions

    def _noise_generators(self, n: int, seed: int, generator: torch.Generator | None) -> list[torch.Generator] | torch.Generator:
        if generator is not None:
            return generator
        return [torch.Generator().manual_seed(_image_seed(seed, k)) for k in range(n)]

    @torch.no_grad()
    def denoise(self, states: torch.Tensor, mask: torch.Tensor, uncond: tuple[torch.Tensor, torch.Tensor],
                 steps: int, guidance_scale: float, sched: Any,
                 generator: list[torch.Generator] | torch.Generator | None, record: set[int] | None = None,
                 progress: bool = False, on_step: Callable[[int, Any, torch.Tensor], torch.Tensor] | None = None,
                 guidance_end: float = 1.0,
                 ) -> tuple[torch.Tensor, list[tuple[int, float, torch.Tensor, torch.Tensor]]]:
        """The sampling loop with the scheduler instance ``sched``; returns the final latents and snapshots.

        ``on_step(i, t, latents)`` runs after each scheduler step and returns the
        latents to go on with (what diffusers' ``callback_on_step_end`` does).
        ``guidance_end``: guidance runs on the first ``guidance_end`` share of the steps
        only (rounded up), the rest take the conditional prediction alone, at half the cost.
        """
        if not 0.0 <= guidance_end <= 1.0:
            raise ValueError(f"guidance_end is a share of the steps, from 0 to 1, got {guidance_end!r}")
        guided_steps = math.ceil(guidance_end * steps)
        from diffusers.utils.torch_utils import randn_tensor
        from tqdm.auto import tqdm

        sched.set_timesteps(steps, device=self.device)
        b = states.shape[0]
        shape = (b, self.config.latent_channels, self.config.latent_size, self.config.latent_size)
        latents = randn_tensor(shape, generator=generator, device=torch.device("cpu")).to(self.device)
        latents = latents * sched.init_noise_sigma
        # .cpu(): diffusers' add_noise moves alphas_cumprod to the samples' device, so after training on a GPU
        # it lives there (found on an H200: the first learning-curve point crashed).
        abar = self.scheduler.alphas_cumprod.cpu().double().numpy()
        # DDIM clips its x0 estimate but by default steps along the noise of the unclipped one; with a guided
        # sample prediction far outside [-1, 1] the two disagree and more steps made images worse.
        accepts = inspect.signature(sched.step).parameters
        step_options = {**({"use_clipped_model_output": True} if "use_clipped_model_output" in accepts else {}),
                        **({"generator": generator} if "generator" in accepts else {})}  # UniPC draws no noise
        snapshots = []
        for i, t in enumerate(tqdm(sched.timesteps, disable=not progress, desc="sampling", leave=False)):
            x_in = sched.scale_model_input(latents, t)  # variance-preserving frame for every scheduler
            scale = guidance_scale if i < guided_steps else 1.0
            eps = guided_output(self.unet, x_in, t, states, mask, uncond, scale)
            if record is not None and i in record:
                a = float(np.interp(float(t), np.arange(len(abar)), abar))
                x0 = self._x0(x_in, eps, a)
                snapshots.append((i, float(t), x_in.cpu(), x0.cpu()))
            latents = sched.step(eps, t, latents, **step_options).prev_sample
            if on_step is not None:
                latents = on_step(i, t, latents)
        return latents, snapshots

    def _x0(self, x: torch.Tensor, out: torch.Tensor, abar: float) -> torch.Tensor:
        return clean_estimate(self.config.prediction_type, x, out, abar)

    def _run(self, descriptions: Sequence[str], num_inference_steps: int, guidance_scale: float | None,
             scheduler: str, seed: int, generator: torch.Generator | None, batch_size: int, progress: bool,
             check: bool, record: set[int] | None):
        g_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        descriptions = self._validate(descriptions, num_inference_steps, g_scale, scheduler, batch_size)
        states, mask = self.text_states(descriptions, check)
        uncond = tuple(x[:1] for x in self.text_states([""], check=False))
        gens = self._noise_generators(len(descriptions), seed, generator)
        outs, snaps = [], []
        for start in range(0, len(descriptions), batch_size):
            sl = slice(start, start + batch_size)
            g = gens[sl] if isinstance(gens, list) else gens
            latents, s = self.denoise(states[sl], mask[sl], uncond, num_inference_steps, g_scale,
                                       make_scheduler(scheduler, self.scheduler.config), g, record, progress)
            outs.append(to_images(latents.float().cpu(), self.config.unshuffle))
            snaps.append(s)
        return torch.cat(outs), snaps

    def generate(self, descriptions: Sequence[str], num_inference_steps: int = 25, guidance_scale: float | None = None,
                 scheduler: str = "dpm++", seed: int = 0, generator: torch.Generator | None = None,
                 batch_size: int = 100, progress: bool = False, check: bool = True) -> torch.Tensor:
        """Draw one image per description: a float tensor ``(B, 3, 32, 32)`` in [0, 1].

        ``guidance_scale``: classifier-free guidance, on when above 1 (None: the model's
        default, ``config.guidance_scale``); 0 to 1 means the conditional prediction alone.
        ``scheduler``: one of :data:`SCHEDULERS`. With ``seed``, image ``k`` gets its own
        noise stream derived from ``(seed, k)``, so it is the same whatever the batch
        size; a ``generator`` instead makes one stream for all images, in order.
        The description ``""`` asks for an unconditional image; other descriptions are
        checked as prompts (unknown words raise) unless ``check=False``.
        """
        images, _ = self._run(descriptions, num_inference_steps, guidance_scale, scheduler, seed, generator,
                              batch_size, progress, check, None)
        return images

    def trajectory(self, descriptions: Sequence[str], num_inference_steps: int = 25,
                   guidance_scale: float | None = None, scheduler: str = "dpm++", seed: int = 0,
                   generator: torch.Generator | None = None, n_snapshots: int = 6, batch_size: int = 100,
                   check: bool = True) -> Trajectory:
        """Like :meth:`generate`, keeping ``n_snapshots`` evenly spaced views of the denoising (the first is noise)."""
        if n_snapshots <= 0:
            raise ValueError(f"n_snapshots must be positive, got {n_snapshots}")
        record = {int(round(x)) for x in np.linspace(0, num_inference_steps - 1, min(n_snapshots, num_inference_steps))}
        images, snaps = self._run(descriptions, num_inference_steps, guidance_scale, scheduler, seed, generator,
                                  batch_size, False, check, record)
        f = self.config.unshuffle
        steps = [i for i, *_ in snaps[0]]
        timesteps = [t for _, t, *_ in snaps[0]]
        samples = torch.stack([torch.cat([to_images(chunk[k][2], f) for chunk in snaps]) for k in range(len(steps))])
        preds = torch.stack([torch.cat([to_images(chunk[k][3], f) for chunk in snaps]) for k in range(len(steps))])
        return Trajectory(steps, timesteps, samples, preds, images)

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor | int, descriptions: Sequence[str],
                      check: bool = True) -> torch.Tensor:
        """The UNet's noise prediction for ``latents`` (in the generator's space) at ``timesteps``, given descriptions."""
        states, mask = self.text_states(list(descriptions), check)
        with torch.no_grad():
            return unet_output(self.unet, latents.to(self.device), timesteps, states, mask)


# -- loading and the cache ----------------------------------------------------------
def load(path: str | Path, text_encoder: TextEncoder, device: str | torch.device | None = None) -> ShapesGenerator:
    """Load a generator folder (as :func:`train` or :meth:`ShapesGenerator.save` write it).

    A missing folder, missing files, or a damaged config or weights file raise
    :class:`~llmimg.checkpoints.CheckpointError` saying what is wrong and how to fix it.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors import SafetensorError

    path = require_folder(path, REQUIRED_FILES, "a generator checkpoint", RETRAIN)
    try:
        info = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        config = GeneratorConfig.from_dict(info["config"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{CONFIG_FILE} in {path.name!r} is damaged ({err}); retrain it with "
                              f"`{RETRAIN}`") from err
    try:
        unet = UNet2DConditionModel.from_pretrained(path / UNET_DIR)
        scheduler = DDPMScheduler.from_pretrained(path / SCHEDULER_DIR)
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"the generator in {path.name!r} cannot be loaded, its files are damaged "
                              f"({type(err).__name__}: {err}); retrain it with `{RETRAIN}`") from err
    generator = ShapesGenerator(unet, scheduler, text_encoder, config, device=device)
    generator.path = path
    return generator


def cache_config(config: GeneratorConfig, text_encoder: TextEncoder) -> dict[str, Any]:
    """The cache key's configuration: the generator's config plus the text encoder's folder name."""
    path = getattr(text_encoder, "path", None)
    key = config.as_dict()
    if not key["prompt_rate"]:
        del key["prompt_rate"]  # keeps the keys of generators trained before the field existed
    return {**key, "text_encoder": Path(path).name if path is not None else None}


def get(profile: str | Profile | None = None, *, force: bool = False, progress: bool = True,
        config: GeneratorConfig | None = None) -> ShapesGenerator:
    """The profile's trained generator, from the model cache, trained first (with a progress bar) if missing.

    The text encoder is the profile's CLIP (:func:`llmimg.clip.get`). Same profile and
    configuration → trained once, then loaded. ``force=True`` retrains.
    """
    from llmimg import clip

    profile = get_profile(profile)
    text_encoder = clip.get(profile, progress=progress)
    config = config or default_config(profile)
    key = cache_config(config, text_encoder)

    def build(out: Path, work: Path) -> None:
        outcome = train(config, text_encoder, out, work_dir=work, progress=progress)
        write_manifest(out, STAGE, key, history=outcome.history, seconds=outcome.seconds, curve=outcome.curve)

    folder = cached(STAGE, key, build, profile=profile, force=force)
    return load(folder, text_encoder)


def eval_samples(config: GeneratorConfig, n: int, objects: int, split: str = "val") -> list[Any]:
    """The first ``n`` ShapesWorld samples of ``split`` with exactly ``objects`` objects (1 or 2), as scored here."""
    from llmimg.data import ShapesWorld

    world = ShapesWorld(seed=config.data_seed, max_objects=objects)
    return [s for s in world.samples(n if objects == 1 else 4 * n, split) if len(s.scene) == objects][:n]


def evaluate(generator: ShapesGenerator, n: int = 500, *, split: str = "val", num_inference_steps: int = 25,
             guidance_scale: float | None = None, scheduler: str = "dpm++", seed: int = 0) -> dict[str, Any]:
    """The generator metrics of ``llmimg eval generator``, from the full descriptions of ``n`` one-object scenes.

    First the judge on real renders of the same scenes (``judge_accuracy_on_real``), then
    ShapesEval of the generated images (``all_correct``, ``count_accuracy``,
    ``per_attribute``), CLIPScore with the generator's CLIP, and the Fréchet distance and
    CMMD between generated and real images in CLIP's image-embedding space. Then
    ShapesEval of ``n`` two-object scenes (``two_object_all_correct``,
    ``two_object_count_accuracy``). Every rate has its standard error beside it
    (``<key>_se``; ``per_attribute_se`` for the attributes).
    """
    from llmimg.evaluation import clip_score, cmmd, frechet_distance, shapes_eval, standard_error

    def draw(objects: int) -> tuple[list[str], np.ndarray, torch.Tensor]:
        samples = eval_samples(generator.config, n, objects, split)
        descriptions = [s.description for s in samples]
        images = generator.generate(descriptions, num_inference_steps=num_inference_steps,
                                    guidance_scale=guidance_scale, scheduler=scheduler, seed=seed)
        return descriptions, np.stack([s.image for s in samples]), images

    t0 = time.perf_counter()
    descriptions, real, images = draw(1)
    two_descriptions, _, two_images = draw(2)
    seconds = time.perf_counter() - t0
    judged, two = shapes_eval(images, descriptions), shapes_eval(two_images, two_descriptions)
    clip = generator.text_encoder
    generated_emb, real_emb = clip.encode_image(images), clip.encode_image(real)
    rates = {"all_correct": judged.all_correct, "count_accuracy": judged.count_accuracy,
             "two_object_all_correct": two.all_correct, "two_object_count_accuracy": two.count_accuracy}
    return {
        "judge_accuracy_on_real": shapes_eval(real, descriptions).all_correct,
        **{k: v for key, value in rates.items() for k, v in ((key, value), (f"{key}_se", standard_error(value, n)))},
        "per_attribute": judged.per_attribute,
        "per_attribute_se": {k: standard_error(v, n) for k, v in judged.per_attribute.items()},
        "two_object_per_attribute": two.per_attribute,
        "clip_score": clip_score(generated_emb, clip.encode_text(descriptions)),
        "clip_score_real": clip_score(real_emb, clip.encode_text(descriptions)),
        "frechet_distance": frechet_distance(generated_emb, real_emb),
        "cmmd": cmmd(generated_emb, real_emb),
        "n": n, "num_inference_steps": num_inference_steps, "scheduler": scheduler,
        "guidance_scale": generator.config.guidance_scale if guidance_scale is None else guidance_scale,
        "seconds": seconds,
    }


__all__ = [
    "SCHEDULERS", "Bank", "GeneratorConfig", "ShapesGenerator", "TextEncoder", "Trajectory", "TrainOutcome",
    "build_scheduler", "build_unet", "cache_config", "clean_estimate", "default_config", "diffusion_loss",
    "encode_texts", "eval_samples", "evaluate", "get", "guided_output", "load", "make_bank", "make_batch_fn",
    "make_loss_fn", "make_scheduler", "step_generator", "to_images", "to_latents", "train",
]
