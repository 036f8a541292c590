"""How the pretrained pipeline chooses among the LLM's candidate descriptions: the re-ranking modes.

* ``"none"``: no choice: the LLM writes one description (its first candidate) and it is drawn;
* ``"text"``: CLIP keeps the candidate whose *text* is nearest the prompt (cosine of text
  features). Cheap, but it favours the candidate that adds least to the prompt, which works
  against upsampling;
* ``"image"``: best-of-n: every candidate is drawn from the prompt's own initial noise and
  CLIP keeps the *image* nearest the typed prompt. It costs ``n`` generator calls per prompt.

:func:`pick_best` and :func:`rank_images` are the choice itself, apart from any model, so it
can be tested on cases whose best image is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

RERANK_MODES: tuple[str, ...] = ("none", "text", "image")

# score(images, texts) -> one number per (image, text) pair, shape (N,): higher is a better match.
ImageScorer = Callable[[Sequence[Any], Sequence[str]], torch.Tensor]


def check_rerank(mode: Any) -> str:
    """``mode`` if it names a re-ranking mode (:data:`RERANK_MODES`); else one ValueError line."""
    if mode not in RERANK_MODES:
        raise ValueError(f"unknown re-ranking {mode!r}; choose one of {', '.join(map(repr, RERANK_MODES))}")
    return mode


def pick_best(scores: torch.Tensor) -> list[int]:
    """Per row of ``scores`` ``(B, n)``, the index of the highest score; a tie goes to the earliest candidate."""
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be (prompts, candidates) with at least one candidate, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("a candidate's score is NaN: the scorer failed on it")
    # argmax's choice among equal maxima is unspecified; the earliest keeps "first candidate" as the tie-break.
    return [int(row.eq(row.max()).nonzero()[0]) for row in scores]


def rank_images(prompts: Sequence[str], images: Sequence[Any], score: ImageScorer) -> tuple[list[int], torch.Tensor]:
    """Best-of-n: for each prompt, which of its candidate images ``score`` finds nearest the prompt.

    ``images`` holds ``n`` images per prompt, prompt by prompt (prompt k's candidate j at
    ``k * n + j``); each is scored against its own prompt, the typed one. Returns the chosen
    index per prompt and the scores ``(B, n)``.
    """
    prompts = list(prompts)
    if not prompts or len(images) % len(prompts):
        raise ValueError(f"expected the same number of candidate images for each of {len(prompts)} prompts, "
                         f"got {len(images)} images")
    n = len(images) // len(prompts)
    if n == 0:
        raise ValueError("no candidate images to choose from")
    flat = torch.as_tensor(score(list(images), [p for p in prompts for _ in range(n)]), dtype=torch.float32)
    if flat.shape != (len(images),):
        raise ValueError(f"the scorer must return one score per image, shape ({len(images)},), got {tuple(flat.shape)}")
    scores = flat.view(len(prompts), n)
    return pick_best(scores), scores


__all__ = ["ImageScorer", "RERANK_MODES", "check_rerank", "pick_best", "rank_images"]
