"""What a trained CLIP can do: retrieval, zero-shot attribute classification, and binding."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmimg.core import seeding
from llmimg.core.data import ATTRIBUTES, SHAPES, ShapesWorld, describe, render
from llmimg.core.data.worlds import world_samples
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


def _eval_samples(clip: ShapesCLIP, n: int, split: str, seed: int, world: str | None) -> list[Any]:
    """``n`` samples of ``split`` of ``world`` (None: the world ``clip`` was trained on)."""
    return world_samples(world or clip.config.world, n, split, seed=seed)


def retrieval(clip: ShapesCLIP, n: int = 1000, candidates: int = CANDIDATES, split: str = "val",
              seed: int = 0, *, world: str | None = None, hard_negatives: bool = False) -> dict[str, float]:
    """Top-1 retrieval among ``candidates`` (image, description) pairs, averaged over ``n // candidates`` groups.

    A retrieved item counts as right when its description equals the query's (two
    scenes may be identical). The pairs are samples of ``world`` (None: the world
    ``clip`` was trained on). With ``hard_negatives`` each group is ``candidates // 2``
    samples and, rendered beside them, their :func:`hard_negative` scenes: every query
    then has a rival that differs only in how attributes are bound (or, for one object,
    in one word), so a bag-of-words model is right on about half of the swapped pairs
    and only binding reaches 1.
    """
    if n < candidates:
        raise ValueError(f"n ({n}) must be at least the number of candidates ({candidates})")
    if hard_negatives and candidates % 2:
        raise ValueError(f"a gallery with hard negatives pairs its candidates, so their number must be even, "
                         f"got {candidates}")
    n_groups = n // candidates
    per_group = candidates // 2 if hard_negatives else candidates
    samples = _eval_samples(clip, n_groups * per_group, split, seed, world)
    if hard_negatives:  # each group: its samples, then their negatives
        rng = seeding.numpy_rng(seed, "eval")
        negatives = [hard_negative(s.scene, rng) for s in samples]
        images, descriptions = [], []
        for start in range(0, len(samples), per_group):
            group = range(start, start + per_group)
            images += [samples[i].image for i in group] + [render(negatives[i]) for i in group]
            descriptions += [samples[i].description for i in group] + [describe(negatives[i]) for i in group]
    else:
        images, descriptions = [s.image for s in samples], [s.description for s in samples]
    image_emb = clip.encode_image(np.stack(images))
    text_emb = clip.encode_text(descriptions, check=False)
    all_descriptions = np.array(descriptions)
    t2i, i2t = [], []
    for start in range(0, len(descriptions), candidates):
        block = slice(start, start + candidates)
        names = all_descriptions[block]
        sim = (text_emb[block] @ image_emb[block].T).cpu()
        t2i.append(names[sim.argmax(1).numpy()] == names)
        i2t.append(names[sim.argmax(0).numpy()] == names)
    return {"text_to_image_top1": float(np.mean(t2i)), "image_to_text_top1": float(np.mean(i2t))}


def binding_outcomes(clip: ShapesCLIP, n: int = 500, split: str = "val", seed: int = 0, *,
                     world: str | None = None) -> np.ndarray:
    """Per image (``n`` samples of ``world``; None: the CLIP's own): is it closer to its description than to
    its :func:`hard_negative`'s? The same arguments give the same images and negatives, so two CLIPs can be
    compared image by image (:func:`llmimg.core.evaluation.paired_difference`)."""
    rng = seeding.numpy_rng(seed, "eval")
    samples = _eval_samples(clip, n, split, seed, world)
    images = clip.encode_image(np.stack([s.image for s in samples]))
    right = clip.encode_text([s.description for s in samples], check=False)
    wrong = clip.encode_text([describe(hard_negative(s.scene, rng)) for s in samples], check=False)
    return ((images * right).sum(-1) > (images * wrong).sum(-1)).cpu().numpy()


def binding_accuracy(clip: ShapesCLIP, n: int = 500, split: str = "val", seed: int = 0, *,
                     world: str | None = None) -> float:
    """How often an image is closer to its description than to its :func:`hard_negative` (chance: 0.5)."""
    return float(binding_outcomes(clip, n, split, seed, world=world).mean())


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


__all__ = ["CANDIDATES", "HEADLINE", "MIN_EVAL_N", "ZERO_SHOT_TEMPLATES", "binding_accuracy", "binding_outcomes",
           "evaluate", "retrieval", "zero_shot", "zero_shot_texts"]
