"""Claim 1 (notebook 06): does an LLM that writes the full description improve prompt following?

Two generators of the GenEval-shaped world with one recipe, trained on full descriptions
(the pipeline's own) and on the prompts (:func:`~llmimg.pipelines.protocol.prompt_trained_config`),
each drawn from the prompt as typed and from the LLM's description of it, on a prompt set
of the evaluation protocol (:func:`upsampling_experiment`). Every setting draws the same
prompts from the same noise, so any two compare image by image with the course's paired
rule; every image is judged against the prompt as typed. Beside GenEval's score the table
has the two cheap metrics, CLIPScore and CMMD, each with its standard error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmimg.core import seeding
from llmimg.core.evaluation import clip_score, cmmd
from llmimg.core.evaluation.protocol import EvalSet, ProtocolScore, judge_protocol
from llmimg.pipelines.protocol import draw_eval_set

TRAINING_TEXTS = ("descriptions", "prompts")  # what each generator was trained on
DRAWN_FROM: dict[str, bool] = {"raw prompt": False, "LLM description": True}  # -> the pipeline's `upsample`
N_BOOTSTRAP = 200


def per_prompt_clip_scores(clip: Any, images: np.ndarray, eval_set: EvalSet) -> np.ndarray:
    """Each prompt's CLIPScore (image against the prompt as typed, ×100), averaged over its images: (prompts,).

    The prompt is the unit, as in the protocol's rates: a prompt's images share its difficulty.
    """
    image_emb = clip.encode_image(images)
    text_emb = clip.encode_text(eval_set.image_prompts())
    scores = [clip_score(image_emb[i:i + 1], text_emb[i:i + 1]) for i in range(len(images))]
    return np.asarray(scores).reshape(len(eval_set), eval_set.images_per_prompt).mean(axis=1)


def cmmd_with_se(embeddings: Any, reference: Any, images_per_prompt: int, seed: int = 0,
                 draws: int = N_BOOTSTRAP) -> tuple[float, float]:
    """CMMD of generated ``embeddings`` (in prompt order) to a ``reference`` set, and its standard error.

    The error is the bootstrap's over prompts (each resample keeps a prompt's images
    together; the reference set stays fixed): a distance between sets is not a mean, so
    it has no binomial formula.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    n = len(emb) // images_per_prompt
    rng = seeding.numpy_rng(seed, "bootstrap")
    values = []
    for _ in range(draws):
        prompts = rng.integers(0, n, n)
        rows = (prompts[:, None] * images_per_prompt + np.arange(images_per_prompt)).reshape(-1)
        values.append(cmmd(emb[rows], reference))
    return cmmd(emb, reference), float(np.std(values, ddof=1))


def upsampling_experiment(pipes: dict[str, Any], eval_set: EvalSet, reference_images: np.ndarray, *,
                          num_inference_steps: int | None = None) -> tuple[Any, dict[tuple[str, str], ProtocolScore],
                                                                           dict[tuple[str, str], np.ndarray]]:
    """Each pipeline of ``pipes`` (``"trained on"`` -> pipeline) drawn from the raw prompts and from the LLM's
    descriptions: a pandas table, and per setting its :class:`ProtocolScore` and per-prompt CLIPScores.

    The table has per setting GenEval's ``overall`` (mean of the six categories) and its
    ``overall_se``, each category's rate, ``clip_score`` and ``cmmd`` (to the CLIP image
    embeddings of ``reference_images``, real renders of other scenes of the world) with
    their ``_se``, and ``n_prompts``/``n_images``. Every setting draws the same noise
    (:func:`~llmimg.pipelines.protocol.draw_eval_set`) and the LLM writes the same
    descriptions for both generators.
    """
    import pandas as pd

    rows, scores, clip_scores = [], {}, {}
    for trained_on, pipe in pipes.items():
        clip = pipe.text_encoder
        reference = clip.encode_image(reference_images)
        for given, upsample in DRAWN_FROM.items():
            images, _ = draw_eval_set(pipe, eval_set, upsample=upsample, num_inference_steps=num_inference_steps)
            score = scores[trained_on, given] = judge_protocol(eval_set, images)
            per_prompt = clip_scores[trained_on, given] = per_prompt_clip_scores(clip, images, eval_set)
            distance, distance_se = cmmd_with_se(clip.encode_image(images), reference, eval_set.images_per_prompt)
            rows.append({"trained on": trained_on, "drawn from": given, "n_prompts": score.overall.n_prompts,
                         "n_images": score.overall.n_images, "overall": score.overall.rate,
                         "overall_se": score.overall.se, **{c: r.rate for c, r in score.per_category.items()},
                         "clip_score": float(per_prompt.mean()),
                         "clip_score_se": float(per_prompt.std(ddof=1) / np.sqrt(len(per_prompt))),
                         "cmmd": distance, "cmmd_se": distance_se})
    return pd.DataFrame(rows), scores, clip_scores


__all__ = ["DRAWN_FROM", "TRAINING_TEXTS", "cmmd_with_se", "per_prompt_clip_scores",
           "upsampling_experiment"]
