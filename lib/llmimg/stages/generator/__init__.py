"""Stage 3, the image generator: a text-conditioned diffusion UNet with classifier-free guidance.

``config`` (what defines a trained generator), ``unet`` (latent space, the diffusers UNet,
guidance, schedulers), ``model`` (:class:`ShapesGenerator` and its sampling loop),
``train`` (the DDPM objective) and ``metrics``; :func:`get` gives the profile's trained
generator, on the profile's CLIP, from the model cache.
"""

from __future__ import annotations

from llmimg.core.config import Profile, get_profile
from llmimg.core.store import cache_key, cached
from llmimg.stages import clip as clip_stage
from llmimg.stages.generator.config import (FORMAT, GENEVAL_CATEGORY_WEIGHTS, IMAGE_SIZE, RETRAIN, STAGE,
                                            GeneratorConfig, default_config)
from llmimg.stages.generator.metrics import HEADLINE, eval_samples, evaluate
from llmimg.stages.generator.model import (DeepCache, SamplingOptions, ShapesGenerator, TextEncoder,
                                           Trajectory, encoder_upstream)
from llmimg.stages.generator.train import (Bank, diffusion_loss, encode_texts, make_bank, make_batch_fn,
                                           make_loss_fn, train)
from llmimg.stages.generator.unet import (SCHEDULERS, build_scheduler, build_unet, clean_estimate,
                                          coordinate_channels, guided_output, make_scheduler, pooled_text,
                                          scheduler_config, to_images, to_latents, unet_config, unet_inputs,
                                          unet_output)

Config = GeneratorConfig


def key(config: GeneratorConfig, text_encoder: TextEncoder) -> dict:
    """The cache key of a generator trained with ``config`` on ``text_encoder``'s states."""
    return cache_key(STAGE, FORMAT, config.identity(), encoder_upstream(text_encoder))


def get(profile: str | Profile | None = None, *, config: GeneratorConfig | None = None,
        clip: clip_stage.ShapesCLIP | None = None, force: bool = False, progress: bool = True,
        world: str = "shapes") -> ShapesGenerator:
    """The profile's trained generator, from the model cache, trained first (with a progress bar) if missing.

    Its text encoder is ``clip`` (default: the profile's CLIP of ``world``), and it learns
    that CLIP's world (:func:`~llmimg.core.text.world_of` its tokenizer). Same profile and
    identity → trained once, then loaded; ``force=True`` retrains. The learning curve
    is scored along training at ``config.curve_every``; a cached generator keeps the
    curve of the run that trained it.
    """
    profile = get_profile(profile)
    config = config or default_config(profile, world)
    clip = clip or clip_stage.get(profile, progress=progress, world=world)

    def build_into(out, work) -> None:
        train(config, clip, work_dir=work, progress=progress).save_pretrained(out)

    return ShapesGenerator.from_pretrained(cached(key(config, clip), build_into, profile=profile, force=force), clip)


__all__ = ["Bank", "Config", "DeepCache", "FORMAT", "GENEVAL_CATEGORY_WEIGHTS", "GeneratorConfig", "HEADLINE",
           "IMAGE_SIZE", "RETRAIN", "SCHEDULERS", "STAGE", "SamplingOptions", "ShapesGenerator", "TextEncoder",
           "Trajectory", "build_scheduler", "build_unet", "clean_estimate", "coordinate_channels", "default_config",
           "diffusion_loss", "encode_texts", "encoder_upstream", "eval_samples", "evaluate", "get", "guided_output",
           "key", "make_bank", "make_batch_fn", "make_loss_fn", "make_scheduler", "pooled_text", "scheduler_config",
           "to_images", "to_latents", "train", "unet_config", "unet_inputs", "unet_output"]
