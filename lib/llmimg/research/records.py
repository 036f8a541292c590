"""The experiment records that ``llmimg experiment NAME`` writes and the notebooks read: one way to find, read and
write them (``<name>-<profile>.json`` in :func:`~llmimg.core.config.experiments_dir`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, experiments_dir, get_profile
from llmimg.core.store import atomic_write


def record_path(name: str, profile: str | Profile | None = None) -> Path:
    """Where the record of experiment ``name`` at ``profile`` lives (``$LLMIMG_EXPERIMENTS_DIR`` moves it)."""
    return experiments_dir() / f"{name}-{get_profile(profile).name}.json"


def read_record(name: str, profile: str | Profile | None = None) -> dict[str, Any]:
    """The record of ``name`` at ``profile``; a one-line error naming the command that writes it if it is missing or
    damaged."""
    path = record_path(name, profile)
    command = f"llmimg experiment {name} --profile {get_profile(profile).name}"
    if not path.is_file():
        raise FileNotFoundError(f"no record {path.name}: run `{command}`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name} is damaged ({err.msg}); restore it with `git checkout -- "
                         f"data/experiments/{path.name}` or run `{command}` again") from None


def write_record(name: str, profile: str | Profile | None, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically (a crash leaves the old file, never half a new one); returns its path."""
    path = record_path(name, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


__all__ = ["read_record", "record_path", "write_record"]
