"""Stage 1: a tiny open_clip CLIP, trained from scratch on ShapesWorld (image, text) pairs.

``config`` (what defines a trained CLIP), ``model`` (:class:`ShapesCLIP`, saved as an
open_clip ``local-dir`` folder), ``train`` (contrastive training with binding hard
negatives), ``metrics`` (retrieval, zero-shot, binding); :func:`get` gives the profile's
trained CLIP from the model cache.
"""

from __future__ import annotations

from llmimg.core.config import Profile, get_profile
from llmimg.core.store import cache_key, cached
from llmimg.stages.clip.config import (CONFIG_DIR, FORMAT, RETRAIN, STAGE, ClipConfig, default_config,
                                       model_config)
from llmimg.stages.clip.metrics import (HEADLINE, MIN_EVAL_N, ZERO_SHOT_TEMPLATES, binding_accuracy,
                                        binding_outcomes, evaluate, retrieval, zero_shot, zero_shot_texts)
from llmimg.stages.clip.model import IMAGE_MEAN, IMAGE_STD, ShapesCLIP, build, preprocess
from llmimg.stages.clip.train import ClipBank, binding_loss, hard_negative, train, training_loss

Config = ClipConfig


def key(config: ClipConfig) -> dict:
    """The cache key of a CLIP trained with ``config`` (see :func:`llmimg.core.store.cache_key`)."""
    return cache_key(STAGE, FORMAT, config.identity())


def get(profile: str | Profile | None = None, *, config: ClipConfig | None = None, force: bool = False,
        progress: bool = True, world: str = "shapes") -> ShapesCLIP:
    """The profile's trained CLIP of ``world`` from the model cache, trained and evaluated first if it is not there."""
    profile = get_profile(profile)
    config = config or default_config(profile, world)

    def build_into(out, work) -> None:
        clip = train(config, work_dir=work, progress=progress)
        clip.manifest.metrics = evaluate(clip, n=profile.size("clip.eval_n"))
        clip.save_pretrained(out)

    return ShapesCLIP.from_pretrained(cached(key(config), build_into, profile=profile, force=force))


__all__ = ["CONFIG_DIR", "ClipBank", "ClipConfig", "Config", "FORMAT", "HEADLINE", "IMAGE_MEAN", "IMAGE_STD",
           "MIN_EVAL_N", "RETRAIN", "STAGE", "ShapesCLIP", "ZERO_SHOT_TEMPLATES", "binding_accuracy", "binding_loss",
           "binding_outcomes", "build", "default_config", "evaluate", "get", "hard_negative", "key", "model_config",
           "preprocess", "retrieval", "train", "training_loss", "zero_shot", "zero_shot_texts"]
