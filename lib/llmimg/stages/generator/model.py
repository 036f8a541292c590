"""The trained image generator of stage 3: :class:`ShapesGenerator` draws descriptions with its sampling loop.

It draws a ShapesWorld *description* the way Stable Diffusion draws a prompt: the
description goes through a *frozen* text encoder (the tiny CLIP's text tower, a
:class:`TextEncoder`), whose per-token states condition the UNet; the sampling loop
(:meth:`ShapesGenerator.denoise`) runs any diffusers scheduler from noise to image, with
classifier-free guidance. :class:`SamplingOptions` says how the loop runs the UNet: the
exact speed switches of notebook 08 and DeepCache change it, never the model.

A saved generator is a folder holding ``unet/`` (diffusers ``save_pretrained``, loads
with ``UNet2DConditionModel.from_pretrained``), ``scheduler/`` (the DDPM training
scheduler) and ``llmimg.json`` (config, history, learning curve; ``upstream`` names the
text encoder's cache folder).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.config import show_progress
from llmimg.core.checks import check_generator, check_sampling
from llmimg.core.folders import first_line
from llmimg.core.loading import check_config, check_finite
from llmimg.core.store import CheckpointError, Manifest, quiet_libraries, read_manifest, require_folder, save_model
from llmimg.stages.generator.config import FORMAT, RETRAIN, STAGE, GeneratorConfig
from llmimg.stages.generator.unet import (SCHEDULERS, clean_estimate, guided_output, make_scheduler, scheduler_config,
                                          to_images, unet_config, unet_inputs, unet_output)

UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
TEXT_WIDTH_KEYS = ("cross_attention_dim", "projection_class_embeddings_input_dim")  # set by the text encoder
REQUIRED_FILES = [f"{UNET_DIR}/config.json", f"{UNET_DIR}/diffusion_pytorch_model.safetensors",
                  f"{SCHEDULER_DIR}/scheduler_config.json"]


class TextEncoder(Protocol):
    """What the generator needs from a text encoder (``llmimg.stages.clip.ShapesCLIP`` provides it).

    ``token_states(texts, check)`` returns the per-token hidden states ``(B, L, width)``
    and the attention mask ``(B, L)`` (1 for real tokens); ``""`` must encode to the
    unconditional text. ``width`` is the states' last dimension; ``path`` the cache
    folder it was loaded from (None if it was not) and ``stage`` that folder's stage.
    """

    width: int
    path: Path | None
    stage: str
    tokenizer: Any  # whose vocabulary names the world the texts come from (llmimg.core.text.world_of)

    def token_states(self, texts: list[str], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class SamplingOptions:
    """How the sampling loop runs the UNet; none of these changes the trained model.

    * ``batched_guidance``: guidance's unconditional and conditional halves in one UNet
      call (True) or two; exact either way.
    * ``deep_cache_interval``: DeepCache (Ma et al., 2024) when above 1: the whole UNet
      runs on every this-many-th step and the steps between reuse its deep features
      (:class:`DeepCache`); it changes the images a little.
    * ``text_state_cache``: a dict keeping each text's encoder states, so that a text seen
      before (the unconditional ``""`` of every call) is encoded once; exact. None: off.
    """

    batched_guidance: bool = True
    deep_cache_interval: int = 1
    text_state_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        interval = self.deep_cache_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"deep_cache_interval must be a positive whole number, got {interval!r}")


class DeepCache:
    """DeepCache for one sampling run: the UNet's deep features, kept on full steps and reused on the others.

    Between neighbouring steps the deep, low-resolution features change little. A full
    step runs the whole UNet and keeps what enters its last up block; a cached step runs
    only the outer ring: the time embedding, ``conv_in``, the first down block (for its
    skip connections), the last up block on the kept features, and ``conv_out``.
    """

    def __init__(self, unet: Any, interval: int) -> None:
        first, last = unet.down_blocks[0], unet.up_blocks[-1]
        if interval > 1 and (getattr(first, "has_cross_attention", False)
                             or getattr(last, "has_cross_attention", False)):
            raise ValueError("DeepCache needs a UNet whose outermost blocks have no cross-attention")
        self.unet, self.interval, self.kept = unet, interval, {}

    def __call__(self, step: int, x: torch.Tensor, t: Any, states: torch.Tensor, mask: torch.Tensor,
                 half: str) -> torch.Tensor:
        """The UNet's output on sampling step ``step`` (``half``: which guidance half, each keeps its own features)."""
        if self.interval == 1:
            return unet_output(self.unet, x, t, states, mask)
        if step % self.interval == 0 or half not in self.kept:
            def keep(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
                self.kept[half] = kwargs["hidden_states"]

            hook = self.unet.up_blocks[-1].register_forward_pre_hook(keep, with_kwargs=True)
            try:
                return unet_output(self.unet, x, t, states, mask)
            finally:
                hook.remove()
        return self._shallow(x, t, states, mask, self.kept[half])

    def _shallow(self, x: torch.Tensor, t: Any, states: torch.Tensor, mask: torch.Tensor,
                 deep: torch.Tensor) -> torch.Tensor:
        unet = self.unet
        sample, class_labels = unet_inputs(unet, x, states, mask)
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), None)
        class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
        if class_emb is not None:
            emb = emb + class_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        h = unet.conv_in(sample)
        _, res = unet.down_blocks[0](hidden_states=h, temb=emb)
        last = unet.up_blocks[-1]
        skips = (h, *res)[:len(last.resnets)]  # the last up block reads the first skip connections
        out = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips)
        if unet.conv_norm_out is not None:
            out = unet.conv_act(unet.conv_norm_out(out))
        return unet.conv_out(out)


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


def encoder_upstream(text_encoder: TextEncoder) -> dict[str, str]:
    """The manifest's ``upstream`` entry of a text encoder: ``{its stage: its cache folder}`` (empty if unsaved)."""
    path = getattr(text_encoder, "path", None)
    return {getattr(text_encoder, "stage", "text_encoder"): Path(path).name} if path is not None else {}


class ShapesGenerator:
    """A trained generator: UNet, training scheduler, frozen text encoder and config, ready to draw descriptions."""

    def __init__(self, unet: Any, scheduler: Any, text_encoder: TextEncoder, config: GeneratorConfig, *,
                 path: Path | None = None, manifest: Manifest | None = None) -> None:
        width = unet.config.cross_attention_dim
        if width != text_encoder.width:
            raise ValueError(f"the UNet reads text states of width {width}, but the text encoder gives "
                             f"{text_encoder.width}: it was trained with another text encoder")
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler, self.text_encoder, self.config, self.path = scheduler, text_encoder, config, path
        self.manifest = manifest or Manifest(STAGE, FORMAT, config.as_dict(), upstream=encoder_upstream(text_encoder))

    @property
    def device(self) -> torch.device:
        """Where the UNet is (``.to`` on it, or on a pipeline holding it, moves the generator)."""
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> ShapesGenerator:
        self.unet.to(device)
        return self

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training loss by step."""
        return self.manifest.history

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"ShapesGenerator(unet={n / 1e6:.2f}M parameters, latent {self.config.latent_channels}×"
                f"{self.config.latent_size}×{self.config.latent_size}, device={self.device})")

    # -- saving and loading -------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Save as a generator folder: ``unet/``, ``scheduler/`` and ``llmimg.json`` last.

        Into a new or empty folder, or over a generator saved before (the user's other
        files there stay); any other non-empty folder is refused, with nothing written.
        """
        def write(out: Path) -> None:
            with quiet_libraries():
                self.unet.save_pretrained(out / UNET_DIR, safe_serialization=True)
                self.scheduler.save_pretrained(out / SCHEDULER_DIR)

        return save_model(path, write, self.manifest, "generator")

    @classmethod
    def from_pretrained(cls, path: str | Path, text_encoder: TextEncoder, stage: str = STAGE) -> ShapesGenerator:
        """Load a generator folder written by :meth:`save_pretrained` (``stage``: ``"distilled"`` for a student).

        A missing folder, missing files, a damaged manifest or weights file, or a UNet or
        scheduler config unlike the one the model was trained with (diffusers would fill
        a missing key with its default) raise :class:`~llmimg.core.store.CheckpointError`
        saying what is wrong and how to fix it. Weights are read from safetensors only.
        """
        from diffusers import DDPMScheduler, UNet2DConditionModel

        # A student is made again with its own number of steps (N), which only its manifest knows.
        retrain = RETRAIN if stage == STAGE else f"llmimg train {stage} --steps N --force"
        fix = f"retrain it with `{retrain}`"
        path = require_folder(path, REQUIRED_FILES, "a generator checkpoint", retrain)
        manifest = read_manifest(path, stage, fix)
        try:
            config = GeneratorConfig.from_dict(manifest.config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"the config in {path.name!r} is damaged ({err}); {fix}") from None
        # The text width is the text encoder's to say: a UNet of another width is refused below as trained on
        # another encoder, not as damaged.
        shape = {k: v for k, v in unet_config(config, text_encoder.width).items() if k not in TEXT_WIDTH_KEYS}
        check_config(path, f"{UNET_DIR}/config.json", {"_class_name": "UNet2DConditionModel", **shape}, fix)
        check_config(path, f"{SCHEDULER_DIR}/scheduler_config.json",
                     {"_class_name": "DDPMScheduler", **scheduler_config(config)}, fix)
        try:
            with quiet_libraries():
                unet = UNet2DConditionModel.from_pretrained(path / UNET_DIR, use_safetensors=True)
                scheduler = DDPMScheduler.from_pretrained(path / SCHEDULER_DIR)
        except Exception as err:  # safetensors, JSON and shape errors all mean damaged files
            raise CheckpointError(f"the generator in {path.name!r} cannot be loaded, its files are damaged "
                                  f"({type(err).__name__}: {first_line(err)}); {fix}") from err
        check_finite(unet, path, fix)
        return cls(unet, scheduler, text_encoder, config, path=path, manifest=manifest)

    # -- the sampling loop ----------------------------------------------------------------
    def text_states(self, descriptions: list[str], check: bool, cache: dict | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states of ``descriptions`` on the UNet's device; ``""`` is the unconditional text.

        With ``cache`` (a dict, see :class:`SamplingOptions`), texts found there are not
        encoded again and new ones are added. States are padded to one fixed length, so
        a cached row is exactly the row a fresh encoding gives.
        """
        memo = cache if cache is not None else {}
        missing = list(dict.fromkeys(d for d in descriptions if d not in memo))
        full = [d for d in missing if d]
        # "" is the "no condition" text: it skips the prompt check (it has no words).
        for texts, checked in (([""] if "" in missing else [], False), (full, check)):
            if texts:
                with torch.no_grad():
                    states, mask = self.text_encoder.token_states(texts, check=checked)
                for k, d in enumerate(texts):
                    memo[d] = (states[k].float().cpu(), mask[k].cpu())
        rows = [memo[d] for d in descriptions]
        return (torch.stack([r[0] for r in rows]).to(self.device),
                torch.stack([r[1] for r in rows]).to(self.device))

    def prepare_latents(self, n: int, generator: list[torch.Generator] | torch.Generator | None,
                        sched: Any) -> torch.Tensor:
        """The initial noise of ``n`` images, drawn on the CPU (so a seed gives the same noise on any device)."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (n, self.config.latent_channels, self.config.latent_size, self.config.latent_size)
        latents = randn_tensor(shape, generator=generator, device=torch.device("cpu")).to(self.device)
        return latents * sched.init_noise_sigma

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                uncond: tuple[torch.Tensor, torch.Tensor], steps: int, guidance_scale: float, sched: Any,
                generator: list[torch.Generator] | torch.Generator | None, *,
                options: SamplingOptions | None = None, record: set[int] | None = None, progress: bool = False,
                on_step: Callable[[int, Any, torch.Tensor], torch.Tensor] | None = None,
                guidance_end: float = 1.0) -> tuple[torch.Tensor, list[tuple[int, float, torch.Tensor, torch.Tensor]]]:
        """The sampling loop from ``latents`` with the scheduler instance ``sched``; the final latents and snapshots.

        ``on_step(i, t, latents)`` runs after each scheduler step and returns the
        latents to go on with (what diffusers' ``callback_on_step_end`` does).
        ``guidance_end``: guidance runs on the first ``guidance_end`` share of the steps
        only (rounded up); the rest take the conditional prediction alone, at half the cost.
        ``generator`` feeds the schedulers that draw noise on their way (DDPM).
        """
        from tqdm.auto import tqdm

        if not 0.0 <= guidance_end <= 1.0:
            raise ValueError(f"guidance_end is a share of the steps, from 0 to 1, got {guidance_end!r}")
        options = options or SamplingOptions()
        guided_steps = math.ceil(guidance_end * steps)
        sched.set_timesteps(steps, device=self.device)
        # .cpu(): diffusers' add_noise moves alphas_cumprod to the samples' device, so after training on a GPU
        # it lives there (found on an H200: the first learning-curve point crashed).
        abar = self.scheduler.alphas_cumprod.cpu().double().numpy()
        # DDIM clips its x0 estimate but by default steps along the noise of the unclipped one; with a guided
        # sample prediction far outside [-1, 1] the two disagree and more steps made images worse.
        accepts = inspect.signature(sched.step).parameters
        step_options = {**({"use_clipped_model_output": True} if "use_clipped_model_output" in accepts else {}),
                        **({"generator": generator} if "generator" in accepts else {})}  # UniPC draws no noise
        unet_call = DeepCache(self.unet, options.deep_cache_interval)
        snapshots = []
        for i, t in enumerate(tqdm(sched.timesteps, disable=not show_progress(progress), desc="sampling", leave=False)):
            x_in = sched.scale_model_input(latents, t)  # variance-preserving frame for every scheduler
            scale = guidance_scale if i < guided_steps else 1.0
            out = guided_output(self.unet, x_in, t, states, mask, uncond, scale, batched=options.batched_guidance,
                                call=lambda x_, t_, s_, m_, half, i=i: unet_call(i, x_, t_, s_, m_, half))
            if record is not None and i in record:
                a = float(np.interp(float(t), np.arange(len(abar)), abar))
                snapshots.append((i, float(t), x_in.cpu(), clean_estimate(self.config.prediction_type, x_in, out,
                                                                          a).cpu()))
            latents = sched.step(out, t, latents, **step_options).prev_sample
            if on_step is not None:
                latents = on_step(i, t, latents)
        return latents, snapshots

    # -- drawing --------------------------------------------------------------------------
    def _validate(self, descriptions: Sequence[str], num_inference_steps: int, guidance_scale: float,
                  scheduler: str, batch_size: int, generator: Any = None) -> list[str]:
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
        check_generator(generator, len(descriptions), "description")
        return descriptions

    def _run(self, descriptions: Sequence[str], num_inference_steps: int, guidance_scale: float | None,
             scheduler: str, seed: int, generator: torch.Generator | None, batch_size: int, progress: bool,
             check: bool, record: set[int] | None, options: SamplingOptions | None):
        g_scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        descriptions = self._validate(descriptions, num_inference_steps, g_scale, scheduler, batch_size, generator)
        cache = options.text_state_cache if options is not None else None
        states, mask = self.text_states(descriptions, check, cache)
        uncond = self.text_states([""], False, cache)
        gens = generator if generator is not None else seeding.noise_generators(seed, len(descriptions))
        outs, snaps = [], []
        for start in range(0, len(descriptions), batch_size):
            sl = slice(start, start + batch_size)
            g = gens[sl] if isinstance(gens, list) else gens
            sched = make_scheduler(scheduler, self.scheduler.config)
            latents = self.prepare_latents(len(descriptions[sl]), g, sched)
            latents, s = self.denoise(latents, states[sl], mask[sl], uncond, num_inference_steps, g_scale, sched, g,
                                      options=options, record=record, progress=progress)
            outs.append(to_images(latents.float().cpu(), self.config.unshuffle))
            snaps.append(s)
        return torch.cat(outs), snaps

    def generate(self, descriptions: Sequence[str], num_inference_steps: int = 25, guidance_scale: float | None = None,
                 scheduler: str = "dpm++", seed: int = 0, generator: torch.Generator | None = None,
                 batch_size: int = 100, progress: bool = False, check: bool = True,
                 options: SamplingOptions | None = None) -> torch.Tensor:
        """Draw one image per description: a float tensor ``(B, 3, 32, 32)`` in [0, 1].

        ``guidance_scale``: classifier-free guidance, on when above 1 (None: the model's
        default, ``config.guidance_scale``); 0 to 1 means the conditional prediction alone.
        ``scheduler``: one of :data:`SCHEDULERS`. With ``seed``, image ``k`` draws its noise
        from ``(seed, "noise", k)``, so it is the same whatever the batch size; a
        ``generator`` instead makes one stream for all images, in order.
        The description ``""`` asks for an unconditional image; other descriptions are
        checked as prompts (unknown words raise) unless ``check=False``.
        """
        images, _ = self._run(descriptions, num_inference_steps, guidance_scale, scheduler, seed, generator,
                              batch_size, progress, check, None, options)
        return images

    def trajectory(self, descriptions: Sequence[str], num_inference_steps: int = 25,
                   guidance_scale: float | None = None, scheduler: str = "dpm++", seed: int = 0,
                   generator: torch.Generator | None = None, n_snapshots: int = 6, batch_size: int = 100,
                   check: bool = True) -> Trajectory:
        """Like :meth:`generate`, keeping ``n_snapshots`` evenly spaced views of the denoising (the first is noise)."""
        if isinstance(n_snapshots, bool) or not isinstance(n_snapshots, int) or n_snapshots <= 0:
            raise ValueError(f"n_snapshots must be a positive whole number, got {n_snapshots!r}")
        record = {int(round(x)) for x in np.linspace(0, num_inference_steps - 1, min(n_snapshots, num_inference_steps))}
        images, snaps = self._run(descriptions, num_inference_steps, guidance_scale, scheduler, seed, generator,
                                  batch_size, False, check, record, None)
        f = self.config.unshuffle
        steps = [i for i, *_ in snaps[0]]
        timesteps = [t for _, t, *_ in snaps[0]]
        samples = torch.stack([torch.cat([to_images(chunk[k][2], f) for chunk in snaps]) for k in range(len(steps))])
        preds = torch.stack([torch.cat([to_images(chunk[k][3], f) for chunk in snaps]) for k in range(len(steps))])
        return Trajectory(steps, timesteps, samples, preds, images)

    def predict_noise(self, latents: torch.Tensor, timesteps: torch.Tensor | int, descriptions: Sequence[str],
                      check: bool = True) -> torch.Tensor:
        """The UNet's output for ``latents`` (in the generator's space) at ``timesteps``, given descriptions."""
        states, mask = self.text_states(list(descriptions), check)
        with torch.no_grad():
            return unet_output(self.unet, latents.to(self.device), timesteps, states, mask)


__all__ = ["DeepCache", "REQUIRED_FILES", "encoder_upstream", "SamplingOptions", "ShapesGenerator", "TextEncoder",
           "Trajectory"]
