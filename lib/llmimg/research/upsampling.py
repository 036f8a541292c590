"""Claim 1 (notebook 06): does an LLM that expands prompts improve prompt following?

Generators trained on short prompts or on full descriptions, each drawn from raw prompts
and from the LLM's descriptions of them, scored by ShapesEval against the prompt on the
held-out compositional split (:func:`upsampling_experiment`). Every model here is trained
through the profile's cache, so the notebook trains once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from llmimg.core.config import Profile
from llmimg.core.evaluation import clip_score, cmmd, shapes_eval, standard_error
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

# What each generator of the experiment was trained on: the share of short prompts.
# (A third, an 80/20 mix, behaved like the description generator; at 1,200 steps a generator is 20
# minutes of a 2-core CPU, so the experiment keeps the two that answer the question.)
TRAINING_TEXTS: dict[str, float] = {"prompts": 1.0, "descriptions": 0.0}
ATTRIBUTES = ("shape", "colour", "size", "position")


def text_variant(kind: str, profile: str | Profile | None = None) -> gen_stage.GeneratorConfig:
    """The profile's generator config trained on ``kind`` texts (a key of :data:`TRAINING_TEXTS`)."""
    if kind not in TRAINING_TEXTS:
        raise ValueError(f"unknown training texts {kind!r}; choose one of {', '.join(TRAINING_TEXTS)}")
    config = gen_stage.default_config(profile)
    if kind == "descriptions":
        return config  # the pipeline's own generator, learning curve included
    return replace(config, prompt_rate=TRAINING_TEXTS[kind], curve_every=0)


def variant_generator(kind: str, profile: str | Profile | None = None, *,
                      progress: bool = True) -> gen_stage.ShapesGenerator:
    """The generator trained on ``kind`` texts, from the cache (``descriptions`` is the pipeline's own)."""
    return gen_stage.get(profile, config=text_variant(kind, profile), progress=progress)


def score(generator: gen_stage.ShapesGenerator, texts: Sequence[str], prompts: Sequence[str],
          real_embeddings: torch.Tensor, *, num_inference_steps: int, seed: int = 0,
          scheduler: str = "dpm++") -> dict[str, float]:
    """Draw ``texts`` and score the images against ``prompts``: ShapesEval, CLIPScore and CMMD to real images.

    ``n`` is the number of prompts and ``all_correct_se`` the standard error of ``all_correct``.
    """
    images = generator.generate(list(texts), num_inference_steps=num_inference_steps, seed=seed,
                                scheduler=scheduler, check=False)
    judged = shapes_eval(images, list(prompts))
    clip = generator.text_encoder
    emb = clip.encode_image(images)
    return {"n": len(prompts), "all_correct": judged.all_correct,
            "all_correct_se": standard_error(judged.all_correct, len(prompts)),
            **{a: judged.per_attribute.get(a, float("nan")) for a in ATTRIBUTES},
            "count": judged.count_accuracy, "clip_score": clip_score(emb, clip.encode_text(list(prompts))),
            "cmmd": cmmd(emb, real_embeddings)}


def upsampling_experiment(llm: llm_stage.ShapesLLM, generators: dict[str, gen_stage.ShapesGenerator],
                          samples: Sequence[Any], *, num_inference_steps: int = 10, seed: int = 0):
    """Every generator drawn from the raw prompts and from the LLM's descriptions of them: a pandas table.

    The LLM writes one description per prompt (sampled, seeded) and every generator
    draws the same ones, from the same noise. Scores are always against the prompt.
    """
    import pandas as pd

    prompts = [s.prompt for s in samples]
    written = llm.upsample(prompts, seed=seed)
    real = llm.clip.encode_image(np.stack([s.image for s in samples]))
    rows = []
    for trained_on, gen in generators.items():
        for given, texts in (("raw prompt", prompts), ("LLM description", written)):
            rows.append({"trained on": trained_on, "drawn from": given,
                         **score(gen, texts, prompts, real, num_inference_steps=num_inference_steps, seed=seed)})
    return pd.DataFrame(rows)


__all__ = ["ATTRIBUTES", "TRAINING_TEXTS", "score", "text_variant", "upsampling_experiment", "variant_generator"]
