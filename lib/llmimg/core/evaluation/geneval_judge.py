"""ShapesEval for the GenEval-shaped world: counts and relations judged exactly from images.

GenEval (Ghosh et al., 2023) runs an object detector on each image and checks the
prompt's objects, their count, colours and relative positions. Here the training-free
:func:`~llmimg.core.evaluation.judge_images` reads every object with its cell, and the
planner's own checker, :func:`~llmimg.core.data.geneval.check_layout`, compares what it
read with the prompt the user typed. An image is right when the checker finds nothing
wrong: exactly the prompt's objects (no more: in this world a prompt names every
object), each with what the prompt states, every relation holding by GenEval's rule.
The judge is validated on rendered ground truth of each category first
(:func:`judge_accuracy_on_renders`), as the course validates today's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmimg.core.data.geneval import CATEGORIES, GenEvalWorld, LayoutFailure, PromptScene, check_layout
from llmimg.core.data.world import Scene
from llmimg.core.evaluation.judge import JudgedImage, judge_images

NOTHING_SEEN = LayoutFailure("count", "the judge sees no object in the image")


def _read(images: Any) -> list[Scene | None]:
    """The layout the judge reads from each image (None: nothing there); Scenes and JudgedImages pass through."""
    if isinstance(images, (list, tuple)) and images and all(isinstance(x, (JudgedImage, Scene)) for x in images):
        return [x if isinstance(x, Scene) else x.scene for x in images]
    return [j.scene for j in judge_images(images)]


def judge_layouts(images: Any, prompts: Sequence[str | PromptScene]) -> list[tuple[LayoutFailure, ...]]:
    """For each image, the constraints of its prompt it breaks (empty: the image follows the prompt).

    ``images``: anything :func:`~llmimg.core.evaluation.judge_images` reads, or a list of
    :class:`~llmimg.core.evaluation.JudgedImage` or :class:`~llmimg.core.data.Scene`;
    ``prompts``: one per image, the prompt typed (text or a parsed ``PromptScene``).
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of prompts, one per image, not a single string")
    prompts = list(prompts)
    layouts = _read(images)
    if len(layouts) != len(prompts):
        raise ValueError(f"got {len(layouts)} images but {len(prompts)} prompts; they must pair up one to one")
    return [(NOTHING_SEEN,) if layout is None else check_layout(prompt, layout)
            for layout, prompt in zip(layouts, prompts)]


def prompts_followed(images: Any, prompts: Sequence[str | PromptScene]) -> np.ndarray:
    """Whether each image follows its prompt (GenEval's 0/1 per image), as a boolean array."""
    return np.array([not failures for failures in judge_layouts(images, prompts)], dtype=bool)


def judge_accuracy_on_renders(world: GenEvalWorld, n: int, split: str = "val",
                              categories: Sequence[str] = CATEGORIES) -> dict[str, float]:
    """Per category, the rate at which rendered ground truth of ``n`` samples is judged right: the judge's ceiling."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rates = {}
    for category in categories:
        samples = [world.sample(i, split, category=category) for i in range(n)]
        followed = prompts_followed(np.stack([s.image for s in samples]), [s.prompt_scene for s in samples])
        rates[category] = float(followed.mean())
    return rates


__all__ = ["NOTHING_SEEN", "judge_accuracy_on_renders", "judge_layouts", "prompts_followed"]
