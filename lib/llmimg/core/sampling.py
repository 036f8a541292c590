"""Sampling from a language model with one random stream per row, inside transformers' ``generate``.

transformers samples a batch from torch's global generator, so a row's text depends on
the rows beside it and on whatever drew from that generator before. :class:`RowSampler`
is a ``LogitsProcessor`` that gives each row its own ``torch.Generator`` (from the seeding
rule) and samples with the **Gumbel-max trick**: with ``G`` i.i.d. Gumbel(0, 1) noise,
``argmax(logits / T + G)`` is an exact sample of ``softmax(logits / T)``. So transformers'
*greedy* search over the perturbed scores samples, and row k's text depends on its
prompt and its own seed only. Temperature, top-k and top-p are applied first, as
transformers' own warpers do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class RowSampler(LogitsProcessor):
    """Turns greedy search into sampling, row ``k`` drawing its noise from ``generators[k]`` (module docstring)."""

    def __init__(self, generators: Sequence[torch.Generator], temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> None:
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        self.generators, self.temperature, self.top_k, self.top_p = list(generators), temperature, top_k, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(scores) != len(self.generators):
            raise ValueError(f"{len(scores)} rows to sample but {len(self.generators)} random streams")
        scores = scores.float() / self.temperature
        if self.top_k:
            kth = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if self.top_p is not None and self.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # mass of the tokens ranked above
            drop = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, order, before > self.top_p)
            scores = scores.masked_fill(drop, -math.inf)
        # One draw per row per step, in order: row k's noise comes from its own stream alone.
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=g.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        return scores + gumbel.to(scores.device)


__all__ = ["RowSampler"]
