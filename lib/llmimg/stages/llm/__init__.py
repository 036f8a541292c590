"""Stage 2: a tiny GPT-2 that writes full ShapesWorld descriptions from CLIP features (ClipCap-style).

One model serves two tasks, told apart by a learned task vector: ``"upsample"`` (from a
typed prompt's CLIP text embedding, and the prompt's own tokens, write a description
that keeps what the prompt states and fills in the rest the way the data does) and
``"caption"`` (from an image's CLIP embedding and patch tokens, write that image's
description: the P(D | I) term of the joint model in notebook 01).

``config`` (what defines a trained LLM), ``model`` (GPT-2 with the prefix mapper and
what it reads), ``writer`` (:class:`ShapesLLM`: sampling, the checker, saving),
``text_encoder`` (its GPT-2 body read as an image generator's text encoder), ``train``
and ``metrics``; :func:`get` gives the profile's trained LLM from the cache.
"""

from __future__ import annotations

from llmimg.core.config import Profile, get_profile
from llmimg.core.store import cache_key, cached
from llmimg.stages import clip as clip_stage
from llmimg.stages.llm.config import FORMAT, MAX_TRIES, RETRAIN, STAGE, TASKS, LLMConfig, default_config
from llmimg.stages.llm.metrics import (HEADLINE, OPEN_ATTRIBUTES, caption_scores, evaluate, open_attributes,
                                       planner_open_attributes, planner_tv, total_variation, tv_difference,
                                       upsampling_scores)
from llmimg.stages.llm.model import ClipCapLM, Context, PrefixMapper, greedy_decode, positions, task_ids, trim_padding
from llmimg.stages.llm.text_encoder import GPT2TextEncoder, hidden_states
from llmimg.stages.llm.train import LLMBank, train
from llmimg.stages.llm.writer import (ShapesLLM, Written, build, gpt2_config, in_reading_order, mapper_config,
                                      prompt_seeds)

Config = LLMConfig


def key(config: LLMConfig, clip: clip_stage.ShapesCLIP) -> dict:
    """The cache key of an LLM trained with ``config`` on ``clip`` (see :func:`llmimg.core.store.cache_key`)."""
    return cache_key(STAGE, FORMAT, config.identity(), {"clip": clip.path.name if clip.path else None})


def get(profile: str | Profile | None = None, *, config: LLMConfig | None = None,
        clip: clip_stage.ShapesCLIP | None = None, force: bool = False, progress: bool = True,
        world: str = "shapes") -> ShapesLLM:
    """The profile's trained LLM from the cache, trained first if missing.

    It is built on ``clip`` (default: the profile's CLIP of ``world``) and learns that CLIP's world.
    """
    profile = get_profile(profile)
    config = config or default_config(profile)
    clip = clip or clip_stage.get(profile, progress=progress, world=world)

    def build_into(out, work) -> None:
        llm = train(config, clip, work_dir=work, progress=progress)
        llm.manifest.metrics = evaluate(llm, n=profile.size("llm.eval_n"))
        llm.save_pretrained(out)

    return ShapesLLM.from_pretrained(cached(key(config, clip), build_into, profile=profile, force=force), clip)


__all__ = ["ClipCapLM", "Config", "Context", "FORMAT", "GPT2TextEncoder", "HEADLINE", "LLMBank", "LLMConfig",
           "MAX_TRIES", "OPEN_ATTRIBUTES", "PrefixMapper", "RETRAIN", "STAGE", "ShapesLLM", "TASKS", "Written", "build",
           "caption_scores", "default_config", "evaluate", "get", "gpt2_config", "greedy_decode", "hidden_states",
           "in_reading_order", "key", "mapper_config", "open_attributes", "planner_open_attributes", "planner_tv",
           "positions", "prompt_seeds", "task_ids", "total_variation", "train", "trim_padding", "tv_difference",
           "upsampling_scores"]
