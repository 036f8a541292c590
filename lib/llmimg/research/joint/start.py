"""Where every regime starts: the trained LLM, and a generator trained on the frozen LLM's states (cached)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from llmimg.core import seeding
from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import shapes_eval
from llmimg.core.store import Manifest, cache_key, cached, cached_folder, quiet_libraries, read_manifest, write_manifest
from llmimg.core.training import fit
from llmimg.pipelines.shapes import DEFAULT_STEPS
from llmimg.research.joint.config import FORMAT, START_STAGE, JointConfig
from llmimg.research.joint.data import JointData
from llmimg.research.joint.model import JointModel, Start, stages
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


def start_config(profile: str | Profile | None = None) -> gen_stage.GeneratorConfig:
    """The starting generator's recipe: the pipeline generator's (same UNet, data and steps), on the LLM's states."""
    return replace(gen_stage.default_config(profile), curve_every=0)


def start(profile: str | Profile | None = None, *, progress: bool = True) -> Start:
    """The profile's starting models, from the cache (the generator is trained first if not there).

    The generator is trained by the pipeline generator's recipe (its UNet, data, steps
    and learning rate), but reading the frozen LLM's states (:func:`text_states`)
    instead of CLIP's text tower: the ``sequential`` regime, from a fresh UNet.
    """
    from diffusers import UNet2DConditionModel

    profile = get_profile(profile)
    llm = llm_stage.get(profile, progress=progress)
    config = start_config(profile)
    n_eval = profile.size("joint.start_eval_n")

    def build(out: Path, work: Path) -> None:
        with seeding.isolated(config.train.seed, "init"):
            fresh = Start(llm, gen_stage.build_unet(config, llm.lm.gpt2.config.n_embd), config, out)
        frozen = JointConfig(regime="sequential", train=config.train)
        data, model = JointData(frozen, fresh), JointModel(frozen, fresh)
        descriptions = [s.description for s in ShapesWorld(seed=config.data_seed, max_objects=1).samples(n_eval, "val")]

        def score(step: int, m: nn.Module) -> dict[str, float] | None:
            """ShapesEval of one-object val descriptions at each quarter of training."""
            if step % max(1, config.train.steps // 4):
                return None
            drawn = stages(copy.deepcopy(m))[1].generate(descriptions, num_inference_steps=DEFAULT_STEPS, check=False)
            judged = shapes_eval(drawn, descriptions)
            return {"n": n_eval, "all_correct": judged.all_correct, **judged.per_attribute}

        with quiet_libraries():  # transformers' notes on the GPT-2 config's defaults
            result = fit(model, data.batch, lambda m, b: m(b), config.train, work_dir=work,
                         desc="starting generator", progress=progress,
                         meta={START_STAGE: config.identity(), "llm": llm.path.name}, on_step=score)
        result.model.unet.save_pretrained(out / "unet", safe_serialization=True)
        write_manifest(out, Manifest(START_STAGE, FORMAT, config.as_dict(), upstream={"llm": llm.path.name},
                                     history=result.history, seconds=result.seconds, curve=result.evaluations))

    folder = cached(start_key(profile, llm), build, profile=profile)
    read_manifest(folder, START_STAGE, "delete that folder and run again: the starting generator is trained anew")
    with quiet_libraries():
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
    return Start(llm, unet, config, folder)


def start_key(profile: Profile, llm: llm_stage.ShapesLLM) -> dict[str, Any]:
    """The cache key of the profile's starting generator, on ``llm``."""
    return cache_key(START_STAGE, FORMAT, {"generator": start_config(profile).identity(), "states": "mean",
                                           "n_eval": profile.size("joint.start_eval_n")}, {"llm": llm.path.name})


def start_is_cached(profile: str | Profile | None = None) -> bool:
    """Whether every starting model (CLIP, LLM, generator) of the profile is in the cache already."""
    profile = get_profile(profile)
    clip_folder = cached_folder(clip_stage.key(clip_stage.default_config(profile)), profile)
    if clip_folder is None:
        return False
    clip = clip_stage.ShapesCLIP.from_pretrained(clip_folder)
    llm_folder = cached_folder(llm_stage.key(llm_stage.default_config(profile), clip), profile)
    if llm_folder is None:
        return False
    llm = llm_stage.ShapesLLM.from_pretrained(llm_folder, clip)
    return cached_folder(start_key(profile, llm), profile) is not None


__all__ = ["Start", "start", "start_config", "start_is_cached", "start_key"]
