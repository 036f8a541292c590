"""Training stage 2: GPT-2 and the prefix mapper learn both tasks with the language-model loss, CLIP frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmimg.core import seeding
from llmimg.core.data.worlds import upsample_target, world_samples
from llmimg.core.store import quiet_libraries
from llmimg.core.text import encode, world_of
from llmimg.core.training import fit
from llmimg.stages.clip import ShapesCLIP
from llmimg.stages.llm.config import TASKS, LLMConfig
from llmimg.stages.llm.model import Context, trim_padding
from llmimg.stages.llm.writer import ShapesLLM, build


class LLMBank:
    """Training examples: frozen-CLIP features of ``n`` scenes' images and prompts, and their descriptions.

    The scenes are of the CLIP's world (:func:`~llmimg.core.text.world_of` its tokenizer).

    With ``read_context`` it also keeps each prompt's token ids and each image's CLIP
    patch tokens (in half precision: 20,000 images of 16 patches take 80 MB). With
    ``prompt_order`` the upsampling targets name the objects in the prompt's order.
    """

    def __init__(self, n: int, clip: ShapesCLIP, seed: int = 0, split: str = "train",
                 chunk: int = 1000, read_context: bool = True, prompt_order: bool = True) -> None:
        samples = world_samples(world_of(clip.tokenizer), n, split, seed=seed)  # the CLIP's world
        images, prompts, patches = [], [], []
        for start in range(0, n, chunk):
            part = samples[start:start + chunk]
            pixels = np.stack([s.image for s in part])
            images.append(clip.encode_image(pixels).cpu())
            prompts.append(clip.encode_text([s.prompt for s in part], check=False).cpu())
            if read_context:
                patches.append(clip.patch_tokens(pixels).cpu().half())
        self.image_z, self.prompt_z = torch.cat(images), torch.cat(prompts)
        self.patches = torch.cat(patches) if read_context else None
        self.prompt_ids = encode(clip.tokenizer, [s.prompt for s in samples], check=False)["input_ids"]
        enc = encode(clip.tokenizer, [s.description for s in samples], check=False)
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        # Upsampling targets: the description, or (prompt_order) the same description
        # with its objects in the prompt's order; captions keep reading order.
        self.upsample_ids, self.upsample_mask = self.ids, self.mask
        if prompt_order:
            enc = encode(clip.tokenizer, [upsample_target(s) for s in samples], check=False)
            self.upsample_ids, self.upsample_mask = enc["input_ids"], enc["attention_mask"]

    def batch(self, step: int, batch_size: int, caption_rate: float, seed: int = 0) -> dict[str, Any]:
        """Training batch ``step``: each row captions (with probability ``caption_rate``) or upsamples."""
        g = seeding.torch_generator(seed, "batch", step)
        idx = torch.randint(len(self.ids), (batch_size,), generator=g)
        task = (torch.rand(batch_size, generator=g) < caption_rate).long()  # 1 = caption
        return self.rows(idx, task)

    def rows(self, idx: torch.Tensor, task: torch.Tensor) -> dict[str, Any]:
        """The batch of examples ``idx``, each captioning (``task`` 1) or upsampling (0)."""
        is_caption = task[:, None] == 1
        z = torch.where(is_caption, self.image_z[idx], self.prompt_z[idx])
        ids = torch.where(is_caption, self.ids[idx], self.upsample_ids[idx])
        mask = torch.where(is_caption, self.mask[idx], self.upsample_mask[idx])
        length = int(mask.sum(1).max())  # drop the columns that are padding in every row: half the compute
        out: dict[str, Any] = {"z": z, "task": task, "input_ids": ids[:, :length],
                               "attention_mask": mask[:, :length]}
        if self.patches is not None:
            out["context"] = Context(trim_padding(self.prompt_ids[idx]), self.patches[idx].float(),
                                     task == TASKS.index("caption"))
        return out


def train(config: LLMConfig, clip: ShapesCLIP, *, work_dir: str | Path | None = None,
          progress: bool = True, device: str | torch.device | None = None) -> ShapesLLM:
    """Train GPT-2 and the prefix mapper on both tasks with the CLIP frozen; returns the model (not saved)."""
    llm = build(config, clip)
    bank = LLMBank(config.n_train, clip, seed=config.seed, read_context=config.read_context,
                   prompt_order=config.prompt_order)

    def loss(model: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        context = b.get("context")
        return model(b["z"], b["task"], b["input_ids"], b["attention_mask"],
                     None if context is None else context.to(b["z"].device))

    with quiet_libraries():  # transformers' notes on the GPT-2 config's defaults
        result = fit(llm.lm, lambda s: bank.batch(s, config.train.batch_size, config.caption_rate, config.seed),
                     loss, config.train, work_dir=work_dir, desc="LLM", progress=progress, device=device,
                     meta={"llm": config.identity(), "clip": llm.manifest.upstream.get("clip")})
    trained = ShapesLLM(result.model, clip.tokenizer, clip, config)
    trained.manifest.history, trained.manifest.seconds = result.history, result.seconds
    return trained


__all__ = ["LLMBank", "train"]


