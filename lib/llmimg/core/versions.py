"""Where the dependency versions llmimg supports differ, and the one way the library bridges each difference.

pyproject.toml's ranges reach back to what Colab preinstalls (``make test-colab`` runs on
those versions), so a call that changed name between versions goes through here.
"""

from __future__ import annotations

import re
from typing import Any

import torch

# diffusers 0.40 renamed from_pretrained's `torch_dtype=` to `dtype=`: 0.39 ignores `dtype=` with only a log line
# (the model would load in float32), 0.40 and later warn that `torch_dtype=` is deprecated.
DIFFUSERS_DTYPE_SINCE = (0, 40)


def release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"0.39.0"``, ``"0.43.0.dev0"`` or ``"2.11.0+cu128"``."""
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a version number: {version!r}")
    return int(match.group(1)), int(match.group(2))


def diffusers_dtype(dtype: torch.dtype | None, version: str | None = None) -> dict[str, Any]:
    """The keyword argument that gives diffusers' ``from_pretrained`` the ``dtype`` (``{}`` for None).

    ``version`` is the installed diffusers' unless given: ``{"dtype": ...}`` from 0.40 on,
    ``{"torch_dtype": ...}`` before (Colab's 0.39).
    """
    if dtype is None:
        return {}
    if version is None:
        import diffusers

        version = diffusers.__version__
    return {"dtype" if release(version) >= DIFFUSERS_DTYPE_SINCE else "torch_dtype": dtype}


__all__ = ["DIFFUSERS_DTYPE_SINCE", "diffusers_dtype", "release"]
