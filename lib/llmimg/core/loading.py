"""What a model folder is checked for before it loads, beyond its manifest: its configs as written, its numbers.

:func:`~llmimg.core.store.read_manifest` checks that the files are the ones that were
saved (where the manifest recorded them). Here, what the libraries would not notice:
a config file missing a key they would fill with a default (:func:`check_config`), and
weights holding NaN or infinity (:func:`check_finite`). Either is a
:class:`~llmimg.core.store.CheckpointError` naming the folder and how to make it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from llmimg.core.folders import first_line
from llmimg.core.store import CheckpointError


def check_config(path: str | os.PathLike, name: str, expected: dict[str, Any], fix: str) -> dict[str, Any]:
    """The JSON config ``name`` (``"unet/config.json"``) of the model folder ``path``, checked against ``expected``.

    Every key of ``expected`` must be in the file with that value. The libraries fill a
    missing key with their own default; checking the file as written means none is
    ever substituted for what the model was trained with. A file that is not a JSON
    object, or a key missing or different, is a :class:`CheckpointError` naming the
    folder, the file and the key; ``fix`` says how to make the folder again.
    """
    path = Path(path)
    where = f"{name} in {path.name!r}"
    try:
        data = json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where} cannot be read ({first_line(err)}); {fix}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} is not a JSON object; {fix}")
    difference = _difference(json.loads(json.dumps(expected)), data)
    if difference:
        raise CheckpointError(f"{where} {difference}; {fix}")
    return data


def _difference(expected: dict[str, Any], got: dict[str, Any], prefix: str = "") -> str | None:
    """How ``got`` differs from ``expected`` at the first key that does (nested objects compared key by key)."""
    for key, value in expected.items():
        label = prefix + key
        if key not in got:
            return f"does not state {label!r}"
        if isinstance(value, dict) and isinstance(got[key], dict):
            inner = _difference(value, got[key], label + ".")
            if inner:
                return inner
            extra = sorted(set(got[key]) - set(value))
            if extra:
                return f"has {label + '.' + extra[0]!r}, which the model was not built with"
        elif value != got[key]:
            return f"says {label} = {_short(got[key])}, but the model was trained with {_short(value)}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_finite(module: torch.nn.Module, path: str | os.PathLike, fix: str) -> None:
    """Refuse a loaded model whose weights hold NaN or infinity (damage a folder saved before checksums can hide)."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{Path(path).name!r} is damaged: its weight {name!r} holds numbers that are not "
                                  f"finite; {fix}")


__all__ = ["check_config", "check_finite"]
