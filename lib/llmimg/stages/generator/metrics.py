"""What a trained generator draws: ShapesEval of full descriptions, CLIPScore and CLIP-space distances."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import clip_score, cmmd, frechet_distance, shapes_eval, standard_error
from llmimg.stages.generator.config import GeneratorConfig
from llmimg.stages.generator.model import ShapesGenerator

# The rates of `evaluate` that notebook 05 records and the reference check compares.
HEADLINE = ("all_correct", "count_accuracy", "two_object_all_correct", "two_object_count_accuracy")


def eval_samples(config: GeneratorConfig, n: int, objects: int, split: str = "val") -> list[Any]:
    """The first ``n`` ShapesWorld samples of ``split`` with exactly ``objects`` objects (1 or 2), as scored here."""
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


__all__ = ["HEADLINE", "eval_samples", "evaluate"]
