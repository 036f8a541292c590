"""The CLIP model of stage 1: a plain ``open_clip.CLIP`` with the course's tokenizer.

The model is built from a config that ships with this package
(``model_configs/shapes-clip-*.json``: a ViT on 8×8 patches of 32×32 images and a small
text transformer). Our tokenizer's ``<eos>`` is not its largest id, so the config sets
the text pooling to ``"eos"`` (open_clip's default ``"argmax"`` would pool at the wrong
token).

A saved CLIP is an open_clip ``local-dir`` folder: ``open_clip_config.json``,
``open_clip_model.safetensors`` and the tokenizer (plus ``llmimg.json``), so
``open_clip.create_model("local-dir:" + folder)`` and
``open_clip.get_tokenizer("local-dir:" + folder)`` load it as well as
:meth:`ShapesCLIP.from_pretrained`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.folders import first_line
from llmimg.core.loading import check_config, check_finite
from llmimg.core.store import (CheckpointError, Manifest, quiet_libraries, read_manifest, require_folder, save_model,
                               save_tensors)
from llmimg.core.text import check_tokenizer, encode, world_tokenizer
from llmimg.stages.clip.config import CONFIG_DIR, FORMAT, RETRAIN, STAGE, ClipConfig, default_config, model_config

IMAGE_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] pixels to [-1, 1]
IMAGE_STD = (0.5, 0.5, 0.5)
FILES = ["open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json"]


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
    empty or overlong text raise :class:`llmimg.core.text.PromptError`).
    """

    stage = STAGE  # what the image generator's manifest calls its text encoder

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: ClipConfig, *, path: Path | None = None,
                 manifest: Manifest | None = None) -> None:
        self.model, self.tokenizer, self.config, self.path = model.eval(), tokenizer, config, path
        self.manifest = manifest or Manifest(STAGE, FORMAT, config.as_dict())

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training loss by step (empty for an untrained model)."""
        return self.manifest.history

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

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model as an open_clip ``local-dir`` folder with its tokenizer, ``llmimg.json`` last.

        Into a new or empty folder, or over a CLIP saved before (the user's other files
        there stay); any other non-empty folder is refused, with nothing written.
        """
        def write(out: Path) -> None:
            (out / "open_clip_config.json").write_text(json.dumps(self._open_clip_config(), indent=2),
                                                       encoding="utf-8")
            save_tensors(self.model.state_dict(), out / "open_clip_model.safetensors")
            with quiet_libraries():
                self.tokenizer.save_pretrained(out)

        return save_model(path, write, self.manifest, "CLIP")

    def _open_clip_config(self) -> dict[str, Any]:
        """``open_clip_config.json``: the model config it was built from and how images are prepared."""
        cfg = model_config(self.config.model_name)
        return {"model_cfg": cfg, "preprocess_cfg": {"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD),
                                                     "size": cfg["vision_cfg"]["image_size"]}}

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ShapesCLIP:
        """Load a CLIP saved by :meth:`save_pretrained`; anything missing, damaged or unlike its config is a
        :class:`CheckpointError` saying how to make it again."""
        import open_clip
        from transformers import AutoTokenizer

        fix = f"retrain it with `{RETRAIN}`"
        path = require_folder(path, FILES, "a CLIP checkpoint", RETRAIN)
        manifest = read_manifest(path, STAGE, fix)
        try:
            config = ClipConfig.from_dict(manifest.config)
            expected = {"model_cfg": model_config(config.model_name)}
        except ValueError as err:
            raise CheckpointError(f"the config in {path.name!r} is damaged ({err}); {fix}") from None
        check_config(path, "open_clip_config.json", expected, fix)
        try:
            with _quiet_open_clip(), quiet_libraries():
                model = open_clip.create_model(f"local-dir:{path}", device="cpu")
                tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception as err:  # safetensors, JSON and state-dict errors all mean a damaged folder
            raise CheckpointError(f"{path.name!r} is not a loadable CLIP checkpoint ({first_line(err)}); "
                                  f"{fix}") from err
        problem = check_tokenizer(tokenizer)
        if problem:
            raise CheckpointError(f"the tokenizer in {path.name!r} is damaged: {problem}; {fix}")
        check_finite(model, path, fix)
        return cls(model, tokenizer, config, path=path, manifest=manifest)


def build(config: ClipConfig | None = None) -> ShapesCLIP:
    """An untrained CLIP of ``config`` (default: the current profile's) with a freshly trained tokenizer."""
    import open_clip

    config = config or default_config()
    _register_configs()
    tokenizer = world_tokenizer(config.world)
    cfg = model_config(config.model_name)
    text = cfg["text_cfg"]
    if len(tokenizer) > text["vocab_size"] or tokenizer.model_max_length != text["context_length"]:
        raise ValueError(f"the {config.world} world's tokenizer has {len(tokenizer)} tokens and a context of "
                         f"{tokenizer.model_max_length}; the model config {config.model_name!r} holds "
                         f"{text['vocab_size']} and reads {text['context_length']} (the geneval world takes the "
                         "'-geneval' configs)")
    with seeding.isolated(config.seed, "init"), _quiet_open_clip():
        model = open_clip.create_model(config.model_name, device="cpu")
    return ShapesCLIP(model, tokenizer, config)


__all__ = ["FILES", "IMAGE_MEAN", "IMAGE_STD", "ShapesCLIP", "build", "preprocess"]
