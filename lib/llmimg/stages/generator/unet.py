"""The generator's building blocks: its latent space, the diffusers UNet, guidance and the schedulers.

* **"Latent" space**: instead of an autoencoder, a pixel *unshuffle* (space-to-depth):
  the 32×32×3 image in [-1, 1] becomes a ``32/r × 32/r × 3r²`` tensor by moving each
  ``r × r`` patch into channels (``F.pixel_unshuffle``). It is exactly invertible and
  needs no training, and it makes the UNet's feature maps ``r²`` times smaller, which is
  what lets a CPU train it in minutes.
* **Model**: a ``diffusers`` :class:`~diffusers.UNet2DConditionModel` reading the text's
  per-token states by cross-attention, its pooled state through the timestep embedding,
  and two coordinate channels.
* **Guidance**: ``eps = eps(x, "") + g · (eps(x, text) − eps(x, ""))``, on when ``g > 1``.
* **Samplers**: any diffusers scheduler built from the training scheduler's config with
  ``from_config`` (:data:`SCHEDULERS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmimg.stages.generator.config import GeneratorConfig

# Sampler names and the diffusers scheduler classes they stand for.
SCHEDULERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def to_latents(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [0, 1] → the generator's space: [-1, 1], space-to-depth by ``factor``."""
    x = images * 2.0 - 1.0
    return F.pixel_unshuffle(x, factor) if factor > 1 else x


def to_images(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of :func:`to_latents`, clamped to [0, 1]."""
    x = F.pixel_shuffle(latents, factor) if factor > 1 else latents
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def unet_config(config: GeneratorConfig, cross_attention_dim: int) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` arguments of ``config``'s shape: what :func:`build_unet` builds, loading checks."""
    return dict(
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


def build_unet(config: GeneratorConfig, cross_attention_dim: int):
    """A new ``UNet2DConditionModel`` of ``config``'s shape, reading text states of width ``cross_attention_dim``."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(config, cross_attention_dim))


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


def unet_inputs(unet: Any, x: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the UNet reads besides the timestep and the states: the sample (with coordinates) and the pooled text.

    A UNet with two input channels more than output channels also reads the pixel
    coordinates (:func:`coordinate_channels`), concatenated after the sample, the way
    Stable Diffusion's inpainting UNet reads its mask channels; one built with a
    projection class embedding reads the pooled text (:func:`pooled_text`).
    """
    pooled = pooled_text(states, mask) if unet.config.class_embed_type == "projection" else None
    if unet.config.in_channels == unet.config.out_channels + 2:
        x = torch.cat([x, coordinate_channels(x.shape[0], x.shape[-1], x.device, x.dtype)], dim=1)
    return x, pooled


def unet_output(unet: Any, x: torch.Tensor, t: Any, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The UNet's prediction for ``x`` at ``t`` given text states (and the pooled text, if it takes it)."""
    x, pooled = unet_inputs(unet, x, states, mask)
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
                  uncond: tuple[torch.Tensor, torch.Tensor], guidance_scale: float, *, batched: bool = True,
                  call: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """The UNet's output at ``x``, with classifier-free guidance when ``guidance_scale > 1``.

    ``uncond + g · (cond − uncond)`` as in Stable Diffusion; ``batched`` runs both halves
    in one UNet call (the default), else in two. ``uncond`` is the ``""`` text's states
    and mask (one row), cut to the states' length (its two real tokens fit any); ``t``
    is one timestep or one per row. ``call(x, t, states, mask, half)`` replaces
    :func:`unet_output` (``half`` names the half: ``"both"``, ``"uncond"`` or ``"cond"``;
    DeepCache keeps features per half).
    """
    run = call or (lambda x_, t_, s_, m_, half: unet_output(unet, x_, t_, s_, m_))
    if guidance_scale <= 1.0:
        return run(x, t, states, mask, "cond")
    b, length = x.shape[0], states.shape[1]
    u_states, u_mask = uncond[0][:, :length].expand(b, -1, -1), uncond[1][:, :length].expand(b, -1).to(mask.dtype)
    if batched:
        both_t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t
        uncond_out, cond_out = run(torch.cat([x, x]), both_t, torch.cat([u_states, states]),
                                   torch.cat([u_mask, mask]), "both").chunk(2)
    else:
        uncond_out, cond_out = run(x, t, u_states, u_mask, "uncond"), run(x, t, states, mask, "cond")
    return uncond_out + guidance_scale * (cond_out - uncond_out)


def scheduler_config(config: GeneratorConfig) -> dict[str, Any]:
    """The DDPM training scheduler's arguments of ``config``: what :func:`build_scheduler` builds and loading checks."""
    return dict(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                prediction_type=config.prediction_type, clip_sample=True, clip_sample_range=1.0,
                timestep_spacing=config.timestep_spacing)


def build_scheduler(config: GeneratorConfig):
    """The DDPM training scheduler (epsilon prediction, x0 clipped to [-1, 1] when sampling)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_config(config))


def make_scheduler(name: str, base_config: Any):
    """The sampler ``name`` (one of :data:`SCHEDULERS`) built ``from_config`` of the training scheduler's config."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(base_config)


__all__ = ["SCHEDULERS", "build_scheduler", "build_unet", "clean_estimate", "coordinate_channels", "guided_output",
           "make_scheduler", "pooled_text", "scheduler_config", "to_images", "to_latents", "unet_config", "unet_inputs",
           "unet_output"]
