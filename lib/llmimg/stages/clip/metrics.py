"""What a trained CLIP can do: retrieval, zero-shot attribute classification, and binding."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmimg.core import seeding
from llmimg.core.data import ATTRIBUTES, SHAPES, ShapesWorld, describe
from llmimg.stages.clip.model import ShapesCLIP
from llmimg.stages.clip.train import hard_negative

# The rates of `evaluate` that notebook 03 records and the reference check compares.
HEADLINE = ("text_to_image_top1", "image_to_text_top1", "heldout_text_to_image_top1")


ZERO_SHOT_TEMPLATES: dict[str, str] = {
    "shape": "a {shape}",
    "colour": "a {colour} {shape}",
    "size": "a {size} {shape}",
    "position": "a {shape} in the {position}",
}


def zero_shot_texts(attribute: str, value: str) -> list[str]:
    """The texts whose mean embedding stands for ``attribute = value``: its template filled with every shape."""
    shapes = [value] if attribute == "shape" else SHAPES
    texts = [ZERO_SHOT_TEMPLATES[attribute].format(**{attribute: value, "shape": s}) for s in shapes]
    return [re.sub(r"^a (?=[aeiou])", "an ", t) for t in texts]  # "an orange circle", as captions say


def _zero_shot_classes(clip: ShapesCLIP, attribute: str) -> torch.Tensor:
    """One unit text embedding per value of ``attribute``: its :func:`zero_shot_texts`' mean (prompt ensembling)."""
    rows = [F.normalize(clip.encode_text(zero_shot_texts(attribute, value)).mean(0), dim=-1)
            for value in ATTRIBUTES[attribute]]
    return torch.stack(rows)


def zero_shot(clip: ShapesCLIP, n: int = 500, split: str = "val", seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy of each attribute on single-object scenes, by prompting with attribute texts."""
    samples = list(ShapesWorld(seed=seed, max_objects=1).samples(n, split))
    images = clip.encode_image(np.stack([s.image for s in samples]))
    accuracy = {}
    for attribute, values in ATTRIBUTES.items():
        predicted = (images @ _zero_shot_classes(clip, attribute).T).argmax(-1).cpu()
        truth = torch.tensor([values.index(getattr(s.scene.objects[0], attribute)) for s in samples])
        accuracy[attribute] = float((predicted == truth).double().mean())
    return accuracy


CANDIDATES = 100  # retrieval ranks each query among this many (image, description) pairs
MIN_EVAL_N = CANDIDATES  # the fewest examples `evaluate` can score (`llmimg eval clip --n` is checked against it)


def retrieval(clip: ShapesCLIP, n: int = 1000, candidates: int = CANDIDATES, split: str = "val",
              seed: int = 0) -> dict[str, float]:
    """Top-1 retrieval among ``candidates`` (image, description) pairs, averaged over ``n // candidates`` groups.

    A retrieved item counts as right when its description equals the query's (two
    scenes may be identical).
    """
    if n < candidates:
        raise ValueError(f"n ({n}) must be at least the number of candidates ({candidates})")
    samples = list(ShapesWorld(seed=seed).samples(n - n % candidates, split))
    images = clip.encode_image(np.stack([s.image for s in samples]))
    texts = clip.encode_text([s.description for s in samples], check=False)
    t2i, i2t = [], []
    for start in range(0, len(samples), candidates):
        block = slice(start, start + candidates)
        descriptions = np.array([s.description for s in samples[block]])
        sim = (texts[block] @ images[block].T).cpu()
        t2i.append(descriptions[sim.argmax(1).numpy()] == descriptions)
        i2t.append(descriptions[sim.argmax(0).numpy()] == descriptions)
    return {"text_to_image_top1": float(np.mean(t2i)), "image_to_text_top1": float(np.mean(i2t))}


def binding_accuracy(clip: ShapesCLIP, n: int = 500, split: str = "val", seed: int = 0) -> float:
    """How often an image is closer to its description than to its :func:`hard_negative` (chance: 0.5)."""
    rng = seeding.numpy_rng(seed, "eval")
    samples = list(ShapesWorld(seed=seed).samples(n, split))
    images = clip.encode_image(np.stack([s.image for s in samples]))
    right = clip.encode_text([s.description for s in samples], check=False)
    wrong = clip.encode_text([describe(hard_negative(s.scene, rng)) for s in samples], check=False)
    return float(((images * right).sum(-1) > (images * wrong).sum(-1)).double().mean())


def evaluate(clip: ShapesCLIP, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The CLIP metrics of ``llmimg eval clip``: retrieval on val and heldout, zero-shot accuracy (``n`` >= 100)."""
    if n < MIN_EVAL_N:
        raise ValueError(f"CLIP is scored on at least {MIN_EVAL_N} examples (retrieval ranks among {CANDIDATES}), "
                         f"got n = {n}")
    val = retrieval(clip, n=n, seed=seed)
    heldout = retrieval(clip, n=n, split="heldout", seed=seed)
    per_attribute = zero_shot(clip, n=max(100, n // 2), seed=seed)
    return {
        **val,
        "heldout_text_to_image_top1": heldout["text_to_image_top1"],
        "heldout_image_to_text_top1": heldout["image_to_text_top1"],
        "zero_shot_accuracy": float(np.mean(list(per_attribute.values()))),
        "zero_shot_per_attribute": per_attribute,
        "binding_accuracy": binding_accuracy(clip, n=max(100, n // 2), seed=seed),
    }


__all__ = ["CANDIDATES", "HEADLINE", "MIN_EVAL_N", "ZERO_SHOT_TEMPLATES", "binding_accuracy", "evaluate",
           "retrieval", "zero_shot", "zero_shot_texts"]
