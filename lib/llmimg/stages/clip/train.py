"""Training stage 1: contrastive learning of (image, text) pairs, with hard negatives that teach binding.

Training uses open_clip's ``ClipLoss`` (the symmetric InfoNCE of notebook 01) on
descriptions and, with probability ``prompt_rate``, on prompts instead: later stages
embed typed prompts, so CLIP must have seen short texts too. A second term, the
*binding loss*, makes each image prefer its description over a :func:`hard_negative`
(the same words bound to the other object); without it the embedding is a bag of words
and the LLM cannot tell which colour belongs to which shape.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmimg.core import seeding
from llmimg.core.data import ATTRIBUTES, Scene, describe
from llmimg.core.data.worlds import world_samples
from llmimg.core.store import Manifest
from llmimg.core.text import encode
from llmimg.core.training import fit
from llmimg.stages.clip.config import FORMAT, STAGE, ClipConfig, default_config
from llmimg.stages.clip.model import ShapesCLIP, build, preprocess


def hard_negative(scene: Any, rng: np.random.Generator) -> Any:
    """A scene that differs from ``scene`` only in how attributes are *bound* to objects.

    Two objects swap one attribute they do not share (shape, colour or size), or, for a
    single object, one attribute changes. Random in-batch negatives almost never differ
    this way, so plain contrastive training learns a "bag of words" that cannot tell
    "a red circle and a blue square" from "a blue circle and a red square" (Yuksekgonul
    et al. 2023, NegCLIP); these negatives make the embedding keep the binding.
    """

    objects = list(scene.objects)
    if len(objects) >= 2:
        i, j = rng.choice(len(objects), size=2, replace=False)
        a, b = objects[i], objects[j]
        differing = [n for n in ("shape", "colour", "size") if getattr(a, n) != getattr(b, n)]
        if differing:
            name = differing[int(rng.integers(len(differing)))]
            objects[i] = replace(a, **{name: getattr(b, name)})
            objects[j] = replace(b, **{name: getattr(a, name)})
            return Scene(tuple(objects))
    k = int(rng.integers(len(objects)))  # one object, or two identical but for position
    name = ("shape", "colour", "size")[int(rng.integers(3))]
    others = [v for v in ATTRIBUTES[name] if v != getattr(objects[k], name)]
    objects[k] = replace(objects[k], **{name: others[int(rng.integers(len(others)))]})
    return Scene(tuple(objects))


class ClipBank:
    """The training set: ``n`` scenes of ``world`` rendered and tokenised once, drawn from by step."""

    def __init__(self, n: int, tokenizer: Any, seed: int = 0, split: str = "train", world: str = "shapes") -> None:
        samples = world_samples(world, n, split, seed=seed)
        rng = seeding.numpy_rng(seed, "bank")
        self.images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
        self.descriptions = encode(tokenizer, [s.description for s in samples], check=False)["input_ids"]
        self.prompts = encode(tokenizer, [s.prompt for s in samples], check=False)["input_ids"]
        self.negatives = encode(tokenizer, [describe(hard_negative(s.scene, rng)) for s in samples],
                                check=False)["input_ids"]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int, batch_size: int, prompt_rate: float, seed: int = 0) -> dict[str, torch.Tensor]:
        g = seeding.torch_generator(seed, "batch", step)
        idx = torch.randperm(len(self), generator=g)[:batch_size]  # no repeats: no false negatives
        use_prompt = torch.rand(len(idx), generator=g) < prompt_rate
        text = torch.where(use_prompt[:, None], self.prompts[idx], self.descriptions[idx])
        return {"image": preprocess(self.images[idx].float() / 255.0), "text": text,
                "negative": self.negatives[idx], "is_description": ~use_prompt}


def binding_loss(image_features: torch.Tensor, text_features: torch.Tensor, negative_features: torch.Tensor,
                 logit_scale: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of picking each image's description over its :func:`hard_negative` (rows in ``mask``)."""
    pos = (image_features * text_features).sum(-1)
    neg = (image_features * negative_features).sum(-1)
    logits = logit_scale * torch.stack([pos, neg], dim=1)[mask]
    if not len(logits):
        return logits.sum()  # no description in this batch: nothing to compare
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def training_loss(model: torch.nn.Module, b: dict[str, torch.Tensor], hard_negative_weight: float = 1.0, *,
                  criterion: Any = None) -> torch.Tensor:
    """The loss :func:`train` minimises on a :meth:`ClipBank.batch`: open_clip's ``ClipLoss`` plus
    ``hard_negative_weight`` times the :func:`binding_loss` (``ClipLoss`` alone when the weight is 0)."""
    if criterion is None:
        from open_clip import ClipLoss

        criterion = ClipLoss()
    if not hard_negative_weight:
        return criterion(*model(b["image"], b["text"])[:3])
    # One forward pass for texts and negatives (the CLIP encodes each text on its own).
    image_features, texts, logit_scale = model(b["image"], torch.cat([b["text"], b["negative"]]))[:3]
    text_features, negative_features = texts.chunk(2)
    return criterion(image_features, text_features, logit_scale) + hard_negative_weight * binding_loss(
        image_features, text_features, negative_features, logit_scale, b["is_description"])


def train(config: ClipConfig | None = None, *, work_dir: str | Path | None = None, progress: bool = True,
          device: str | torch.device | None = None) -> ShapesCLIP:
    """Train a CLIP from scratch with open_clip's ``ClipLoss`` plus the binding loss; returns it (not saved)."""
    from open_clip import ClipLoss

    config = config or default_config()
    clip = build(config)
    bank = ClipBank(config.n_train, clip.tokenizer, seed=config.seed, world=config.world)
    criterion = ClipLoss()

    def loss(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return training_loss(model, b, config.hard_negative_weight, criterion=criterion)

    result = fit(clip.model, lambda s: bank.batch(s, config.train.batch_size, config.prompt_rate, config.seed),
                 loss, config.train, work_dir=work_dir, desc="CLIP", progress=progress, device=device,
                 meta={"clip": config.identity()})
    return ShapesCLIP(result.model, clip.tokenizer, config,
                      manifest=Manifest(STAGE, FORMAT, config.as_dict(), history=result.history,
                                        seconds=result.seconds))


__all__ = ["ClipBank", "binding_loss", "hard_negative", "train", "training_loss"]
