"""Stage 1: a tiny open_clip CLIP, trained from scratch on ShapesWorld (image, text) pairs.

The model is a plain ``open_clip.CLIP`` built from a config that ships with this
package (``model_configs/shapes-clip-*.json``: a ViT on 4×4 patches of 32×32 images and
a 3-layer text transformer). Our tokenizer's ``<eos>`` is not its largest id, so the
config sets the text pooling to ``"eos"`` (open_clip's default ``"argmax"`` would pool
at the wrong token).

Training uses open_clip's ``ClipLoss`` (the symmetric InfoNCE of notebook 01) on
descriptions and, with probability ``prompt_rate``, on prompts instead: later stages
embed typed prompts, so CLIP must have seen short texts too. A second term, the
*binding loss*, makes each image prefer its description over a :func:`hard_negative`
(the same words bound to the other object); without it the embedding is a bag of words
and the LLM cannot tell which colour belongs to which shape.

A saved CLIP is an open_clip ``local-dir`` folder: ``open_clip_config.json``,
``open_clip_model.safetensors`` and the tokenizer, so
``open_clip.create_model("local-dir:" + folder)`` and
``open_clip.get_tokenizer("local-dir:" + folder)`` load it as well as :func:`load`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmimg.checkpoints import CheckpointError, cached, read_manifest, require_folder, write_manifest
from llmimg.config import Profile, get_profile
from llmimg.text import encode, train_tokenizer
from llmimg.training import StageConfig, TrainConfig, fit

CONFIG_DIR = Path(__file__).parent / "model_configs"
IMAGE_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] pixels to [-1, 1]
IMAGE_STD = (0.5, 0.5, 0.5)
FILES = ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"]
RETRAIN = "llmimg train clip --force"


@dataclass(frozen=True)
class ClipConfig(StageConfig):
    """Everything that determines a trained CLIP: model config name, data and training."""

    model_name: str = "shapes-clip-small"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=128, lr=1e-3))
    n_train: int = 20_000  # training scenes rendered once and drawn from
    prompt_rate: float = 0.25
    hard_negative_weight: float = 1.0  # weight of the binding loss (see hard_negative); 0 turns it off
    seed: int = 0


def default_config(profile: str | Profile | None = None) -> ClipConfig:
    """The CLIP each profile trains: seconds at ``smoke``, minutes on a CPU at ``default``, a GPU at ``full``."""
    p = get_profile(profile)
    return ClipConfig(
        model_name=p.pick(smoke="shapes-clip-tiny", default="shapes-clip-small", full="shapes-clip-base"),
        train=TrainConfig(steps=p.pick(smoke=30, default=1200, full=20_000),
                          batch_size=p.pick(smoke=32, default=128, full=256),
                          lr=p.pick(smoke=2e-3, default=1e-3, full=5e-4),
                          warmup_steps=p.pick(smoke=5, default=100, full=500)),
        n_train=p.pick(smoke=512, default=20_000, full=200_000),
    )


@cache
def _register_configs() -> None:
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Hide open_clip's log lines on the root logger ("No pretrained weights loaded" for every new model)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def model_config(name: str) -> dict[str, Any]:
    """The open_clip model config ``name`` from ``model_configs/``."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ValueError(f"unknown CLIP config {name!r}; choose one of {known}")
    return json.loads(path.read_text(encoding="utf-8"))


def preprocess(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """CLIP's input from images: uint8 (B, H, W, 3) arrays or float (B, 3, H, W) tensors in [0, 1]."""
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        if x.ndim == 3:
            x = x[None]
        x = x.permute(0, 3, 1, 2).float() / 255.0
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) or (B, H, W, 3) uint8, got {tuple(x.shape)}")
    mean = torch.tensor(IMAGE_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.float() - mean) / std


class ShapesCLIP:
    """A CLIP with its tokenizer: what later stages call to embed text and images.

    Text methods take strings and check them as prompts by default (unknown words,
    empty or overlong text raise :class:`llmimg.text.PromptError`).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: ClipConfig,
                 path: Path | None = None, history: list[dict] | None = None) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path
        self.history = history or []

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def width(self) -> int:
        """Width of the text tower's token states (what the generator attends to)."""
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def to(self, device: str | torch.device) -> ShapesCLIP:
        self.model.to(device)
        return self

    def tokens(self, texts: list[str], check: bool = True) -> torch.Tensor:
        return encode(self.tokenizer, texts, check=check)["input_ids"].to(self.device)

    @torch.no_grad()
    def encode_text(self, texts: list[str], check: bool = True, normalize: bool = True) -> torch.Tensor:
        """Text embeddings (B, embed_dim), unit length unless ``normalize=False``."""
        return self.model.encode_text(self.tokens(texts, check), normalize=normalize)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor | np.ndarray, normalize: bool = True) -> torch.Tensor:
        """Image embeddings (B, embed_dim) of uint8 (B, H, W, 3) or [0, 1] float (B, 3, H, W) images."""
        return self.model.encode_image(preprocess(images).to(self.device), normalize=normalize)

    @property
    def n_patches(self) -> int:
        """Number of image patch tokens the vision tower makes (16 for 32×32 images in 8×8 patches)."""
        vision = model_config(self.config.model_name)["vision_cfg"]
        return (vision["image_size"] // vision["patch_size"]) ** 2

    @property
    def patch_width(self) -> int:
        """Width of the vision tower's patch tokens."""
        return int(model_config(self.config.model_name)["vision_cfg"]["width"])

    @torch.no_grad()
    def patch_tokens(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The vision tower's last-layer patch tokens (B, n_patches, patch_width), layer-normed, row by row.

        The pooled embedding summarises the image in one vector; the patches keep where
        each thing is, which is what a captioner needs to bind attributes to objects.
        """
        out = self.model.forward_intermediates(image=preprocess(images).to(self.device), image_indices=1,
                                               intermediates_only=True, normalize_intermediates=True,
                                               image_output_fmt="NLC")
        return out["image_intermediates"][-1]

    @torch.no_grad()
    def token_states(self, texts: list[str], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token hidden states of the text tower (B, L, width) and the attention mask (B, L)."""
        enc = encode(self.tokenizer, texts, check=check)
        ids = enc["input_ids"].to(self.device)
        out = self.model.forward_intermediates(text=ids, text_indices=1, normalize_intermediates=True,
                                               intermediates_only=True)
        return out["text_intermediates"][-1], enc["attention_mask"].to(self.device)

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the model as an open_clip ``local-dir`` folder (plus ``llmimg.json``)."""
        from llmimg.checkpoints import save_tensors

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = {"model_cfg": model_config(self.config.model_name),
               "preprocess_cfg": {"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD),
                                  "size": model_config(self.config.model_name)["vision_cfg"]["image_size"]}}
        (path / "open_clip_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        save_tensors(self.model.state_dict(), path / "open_clip_model.safetensors")
        self.tokenizer.save_pretrained(path)
        write_manifest(path, "clip", self.config.as_dict(), history=self.history, metrics=metrics or {})
        return path


def build(config: ClipConfig | None = None) -> ShapesCLIP:
    """An untrained CLIP of ``config`` (default: the current profile's) with a freshly trained tokenizer."""
    import open_clip

    config = config or default_config()
    _register_configs()
    tokenizer = train_tokenizer()
    cfg = model_config(config.model_name)
    if len(tokenizer) > cfg["text_cfg"]["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than the config's vocab_size")
    torch.manual_seed(config.seed)
    with _quiet_open_clip():
        model = open_clip.create_model(config.model_name, device="cpu")
    return ShapesCLIP(model, tokenizer, config)


def load(path: str | Path) -> ShapesCLIP:
    """Load a CLIP saved by :meth:`ShapesCLIP.save` (missing or damaged files: :class:`CheckpointError`)."""
    import open_clip
    from transformers import AutoTokenizer

    path = require_folder(path, FILES, "a CLIP checkpoint", RETRAIN)
    manifest = read_manifest(path)
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{path}", device="cpu")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # safetensors, JSON and state-dict errors all mean a damaged folder
        raise CheckpointError(f"{path.name!r} is not a loadable CLIP checkpoint ({err}); retrain it with "
                              f"`{RETRAIN}`") from err
    return ShapesCLIP(model, tokenizer, ClipConfig.from_dict(manifest["config"]), path, manifest.get("history"))


# -- training ------------------------------------------------------------------------
def hard_negative(scene: Any, rng: np.random.Generator) -> Any:
    """A scene that differs from ``scene`` only in how attributes are *bound* to objects.

    Two objects swap one attribute they do not share (shape, colour or size), or, for a
    single object, one attribute changes. Random in-batch negatives almost never differ
    this way, so plain contrastive training learns a "bag of words" that cannot tell
    "a red circle and a blue square" from "a blue circle and a red square" (Yuksekgonul
    et al. 2023, NegCLIP); these negatives make the embedding keep the binding.
    """
    from llmimg.data import ATTRIBUTES, Scene

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
    """The training set: ``n`` ShapesWorld scenes rendered and tokenised once, drawn from by step."""

    def __init__(self, n: int, tokenizer: Any, seed: int = 0, split: str = "train") -> None:
        from llmimg.data import ShapesWorld

        from llmimg.data import describe

        samples = list(ShapesWorld(seed=seed).samples(n, split))
        rng = np.random.default_rng([seed, 7])
        self.images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
        self.descriptions = encode(tokenizer, [s.description for s in samples], check=False)["input_ids"]
        self.prompts = encode(tokenizer, [s.prompt for s in samples], check=False)["input_ids"]
        self.negatives = encode(tokenizer, [describe(hard_negative(s.scene, rng)) for s in samples],
                                check=False)["input_ids"]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int, batch_size: int, prompt_rate: float, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
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


def train(config: ClipConfig | None = None, *, work_dir: str | Path | None = None,
          progress: bool = True) -> ShapesCLIP:
    """Train a CLIP from scratch with open_clip's ``ClipLoss`` plus the binding loss; returns it (not saved)."""
    from open_clip import ClipLoss

    config = config or default_config()
    clip = build(config)
    bank = ClipBank(config.n_train, clip.tokenizer, seed=config.seed)
    criterion = ClipLoss()

    def loss(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return training_loss(model, b, config.hard_negative_weight, criterion=criterion)

    result = fit(clip.model, lambda s: bank.batch(s, config.train.batch_size, config.prompt_rate, config.seed),
                 loss, config.train, work_dir=work_dir, desc="CLIP", progress=progress,
                 meta={"clip": config.as_dict()})
    return ShapesCLIP(result.model, clip.tokenizer, config, history=result.history)


def get(profile: str | Profile | None = None, *, force: bool = False, progress: bool = True,
        config: ClipConfig | None = None) -> ShapesCLIP:
    """The profile's trained CLIP from the cache, trained first if it is not there."""
    config = config or default_config(profile)

    def build_into(out: Path, work: Path) -> None:
        clip = train(config, work_dir=work, progress=progress)
        clip.save(out, metrics=evaluate(clip, n=_eval_size(profile)))

    return load(cached("clip", config.as_dict(), build_into, profile=profile, force=force))


def _eval_size(profile: str | Profile | None) -> int:
    return get_profile(profile).pick(smoke=100, default=1000, full=2000)


# -- evaluation ----------------------------------------------------------------------
ZERO_SHOT_TEMPLATES: dict[str, str] = {
    "shape": "a {shape}",
    "colour": "a {colour} {shape}",
    "size": "a {size} {shape}",
    "position": "a {shape} in the {position}",
}


def zero_shot_texts(attribute: str, value: str) -> list[str]:
    """The texts whose mean embedding stands for ``attribute = value``: its template filled with every shape."""
    from llmimg.data import SHAPES

    shapes = [value] if attribute == "shape" else SHAPES
    texts = [ZERO_SHOT_TEMPLATES[attribute].format(**{attribute: value, "shape": s}) for s in shapes]
    return [re.sub(r"^a (?=[aeiou])", "an ", t) for t in texts]  # "an orange circle", as captions say


def _zero_shot_classes(clip: ShapesCLIP, attribute: str) -> torch.Tensor:
    """One unit text embedding per value of ``attribute``: the mean of its :func:`zero_shot_texts` (prompt ensembling)."""
    from llmimg.data import ATTRIBUTES

    rows = [F.normalize(clip.encode_text(zero_shot_texts(attribute, value)).mean(0), dim=-1)
            for value in ATTRIBUTES[attribute]]
    return torch.stack(rows)


def zero_shot(clip: ShapesCLIP, n: int = 500, split: str = "val", seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy of each attribute on single-object scenes, by prompting with attribute texts."""
    from llmimg.data import ATTRIBUTES, ShapesWorld

    samples = list(ShapesWorld(seed=seed, max_objects=1).samples(n, split))
    images = clip.encode_image(np.stack([s.image for s in samples]))
    accuracy = {}
    for attribute, values in ATTRIBUTES.items():
        predicted = (images @ _zero_shot_classes(clip, attribute).T).argmax(-1).cpu()
        truth = torch.tensor([values.index(getattr(s.scene.objects[0], attribute)) for s in samples])
        accuracy[attribute] = float((predicted == truth).double().mean())
    return accuracy


def retrieval(clip: ShapesCLIP, n: int = 1000, candidates: int = 100, split: str = "val",
              seed: int = 0) -> dict[str, float]:
    """Top-1 retrieval among ``candidates`` (image, description) pairs, averaged over ``n // candidates`` groups.

    A retrieved item counts as right when its description equals the query's (two
    scenes may be identical).
    """
    from llmimg.data import ShapesWorld

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
    from llmimg.data import ShapesWorld, describe

    rng = np.random.default_rng([seed, 11])
    samples = list(ShapesWorld(seed=seed).samples(n, split))
    images = clip.encode_image(np.stack([s.image for s in samples]))
    right = clip.encode_text([s.description for s in samples], check=False)
    wrong = clip.encode_text([describe(hard_negative(s.scene, rng)) for s in samples], check=False)
    return float(((images * right).sum(-1) > (images * wrong).sum(-1)).double().mean())


def evaluate(clip: ShapesCLIP, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The CLIP metrics of ``llmimg eval clip``: retrieval on val and heldout, zero-shot accuracy."""
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


__all__ = ["ClipBank", "ClipConfig", "ShapesCLIP", "ZERO_SHOT_TEMPLATES", "binding_accuracy", "binding_loss", "build", "default_config", "evaluate",
           "get", "hard_negative", "load", "model_config", "preprocess", "retrieval", "train", "training_loss", "zero_shot",
           "zero_shot_texts"]
