"""The offline mode: the pretrained pipeline's three slots filled with models trained on ShapesWorld.

No machine that builds or tests this project can download weights, so notebook 09 runs
offline on models the course trains itself, saved in the hub models' own formats and
loaded back through the very loaders that read the hub models
(:func:`~llmimg.pipelines.pretrained.load`):

* CLIP: the course's CLIP of notebook 03, an open_clip ``local-dir`` folder;
* the writer: a small Qwen2 chat model trained on prompt → description
  (:func:`~llmimg.pipelines.pretrained.offline.writer.save_writer`), loaded by
  ``AutoModelForCausalLM`` and prompted through its chat template;
* the generator: a small Stable Diffusion pipeline (the course CLIP's text tower as its
  text encoder, a VAE and a UNet trained on ShapesWorld;
  :func:`~llmimg.pipelines.pretrained.offline.generator.save_generator`), loaded by
  ``AutoPipelineForText2Image``.

So its descriptions are real ShapesWorld descriptions, its images shapes, and its
CLIPScores and re-ranking results measurements that ShapesEval can check exactly. The
tiny *random* models of :mod:`~llmimg.pipelines.pretrained.tiny` remain for unit tests of
the code path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from llmimg.core.config import Profile, get_profile
from llmimg.core.store import quiet_libraries
from llmimg.pipelines.pretrained.models import PretrainedConfig
from llmimg.pipelines.pretrained.offline.generator import SAMPLING, save_generator
from llmimg.pipelines.pretrained.offline.writer import save_writer
from llmimg.pipelines.pretrained.pipeline import PretrainedPipeline, load
from llmimg.stages import clip as clip_stage


def save_clip(folder: str | os.PathLike, profile: str | Profile | None = None, *, progress: bool = True) -> Path:
    """The profile's trained CLIP (notebook 03's, from the model cache), written into ``folder`` (open_clip layout)."""
    return clip_stage.get(profile, progress=progress).save_pretrained(folder)


def trained_components(folder: str | os.PathLike, profile: str | Profile | None = None, *, progress: bool = True,
                       force: bool = False) -> PretrainedConfig:
    """Save the three trained models under ``folder`` and return the config that names them.

    ``folder`` gets ``clip/``, ``llm/`` and ``generator/``; each model comes from the model
    cache (trained first when it is missing, or again with ``force``), models saved there
    before are replaced, and nothing else of the folder is touched. The config draws as
    the generator was meant to (:data:`~.generator.SAMPLING`).
    """
    folder, profile = Path(folder), get_profile(profile)
    with quiet_libraries():
        return PretrainedConfig(
            clip_model=str(save_clip(folder / "clip", profile, progress=progress)), clip_pretrained=None,
            llm=str(save_writer(folder / "llm", profile, progress=progress, force=force)),
            generator=str(save_generator(folder / "generator", profile, progress=progress, force=force)),
            **SAMPLING)


def trained_pipeline(folder: str | os.PathLike, profile: str | Profile | None = None, *,
                     device: str | torch.device | None = "cpu", progress: bool = True) -> PretrainedPipeline:
    """The pretrained pipeline on models trained on ShapesWorld, saved under ``folder`` (:func:`trained_components`).

    Loaded by :func:`~llmimg.pipelines.pretrained.load`, the loader of the hub models.
    ``device=None`` picks the best available (see :func:`llmimg.core.config.get_device`).
    """
    config = trained_components(folder, profile, progress=progress)
    with quiet_libraries():
        return load(config, device=device)


__all__ = ["SAMPLING", "save_clip", "save_generator", "save_writer", "trained_components",
           "trained_pipeline"]
