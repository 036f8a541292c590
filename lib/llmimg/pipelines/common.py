"""What both pipelines share: the per-stage timer and the output they return."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

STAGES = ("clip_encode", "llm_generate", "denoise", "postprocess")


class StageTimer:
    """Wall-clock milliseconds per stage (:data:`STAGES`); a stage timed twice adds up.

    On a GPU each stage waits for the work it queued before its clock stops, so the
    split between stages is right and not only the total.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.ms = dict.fromkeys(STAGES, 0.0)
        self.device = torch.device(device) if device is not None else None

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in self.ms:
            raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}")
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.ms[name] += (time.perf_counter() - t0) * 1000.0

    def result(self) -> dict[str, float]:
        return {**self.ms, "total": sum(self.ms.values())}


@dataclass
class PipelineOutput(BaseOutput):
    """What a pipeline call returns.

    ``images``: PIL images (``"pil"``), a ``(B, H, W, 3)`` float array in [0, 1] (``"np"``)
    or a ``(B, 3, H, W)`` tensor (``"pt"``); ``descriptions``: the texts the generator drew
    (the LLM's, or the prompts themselves with ``upsample=False``); ``timings``:
    milliseconds per stage (:data:`STAGES`) and ``total``, for the whole batch;
    ``faithful``: whether each description keeps everything its prompt states (the tiny
    pipeline's checker; False when no draw of the LLM did, and the image draws its last
    draw), or None where nothing checked it (``upsample=False``, the pretrained pipeline).
    """

    images: Any
    descriptions: list[str]
    timings: dict[str, float]
    faithful: list[bool] | None = None


__all__ = ["PipelineOutput", "STAGES", "StageTimer"]
