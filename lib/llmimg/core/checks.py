"""Argument checks that the generator stage and both pipelines share, each failing with a one-line reason."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_sampling(num_inference_steps: Any, guidance_scale: Any, num_train_timesteps: int) -> None:
    """Refuse, with a ValueError saying why, step counts and guidance scales no sampler can use."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or num_inference_steps <= 0:
        raise ValueError(f"num_inference_steps must be a positive whole number, got {num_inference_steps!r}")
    if num_inference_steps > num_train_timesteps:
        raise ValueError(f"num_inference_steps can be at most the {num_train_timesteps} training timesteps, "
                         f"got {num_inference_steps}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not np.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a non-negative number (1 or less: no guidance), "
                         f"got {guidance_scale!r}")


def prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """A pipeline's ``prompt`` argument as a non-empty list of strings (a ValueError or TypeError if it is not one)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompts given: pass a prompt or a list with at least one prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("every prompt must be a string")
    return prompts


def check_outputs(output_type: str, generator: Any, n_prompts: int) -> None:
    """Refuse an unknown ``output_type``, or generators that are not one torch.Generator or one per prompt."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
    check_generator(generator, n_prompts)


def check_generator(generator: Any, n: int, what: str = "prompt") -> None:
    """Refuse generators that are not one torch.Generator, one per ``what`` (a list of ``n``), or None."""
    import torch

    gens = generator if isinstance(generator, list) else [generator]
    if any(g is not None and not isinstance(g, torch.Generator) for g in gens):
        got = type(generator).__name__ if not isinstance(generator, list) else "a list holding other things"
        raise TypeError(f"generator must be a torch.Generator, a list of them (one per {what}) or None, got {got}")
    if isinstance(generator, list) and len(generator) != n:
        raise ValueError(f"got {len(generator)} generators for {n} {what}s")


__all__ = ["check_generator", "check_outputs", "check_sampling", "prompt_list"]
