"""Saved models: atomic folders, safetensors, clear errors, and the per-profile model cache.

A trained stage is a folder in the format of its library (``save_pretrained`` for
transformers and diffusers, open_clip's ``local-dir`` layout for CLIP) plus
``llmimg.json``: the stage name, its full configuration and its training history.
``llmimg.json`` is written last inside a temporary folder that is then renamed into
place, so a folder that has it is complete; an interrupted run leaves no half model.

The cache (:func:`llmimg.config.cache_dir`) keys each folder by stage and a hash of
its configuration: ``clip-3f2a9c01d2``. :func:`cached` returns the folder, training
it first when it is missing; a notebook or command that needs a stage calls its
module's ``get(profile)``, which goes through here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

MANIFEST = "llmimg.json"


class CheckpointError(RuntimeError):
    """A saved model that is missing, incomplete or corrupt; the message says which and what to do."""


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``, on error it goes.

    Readers see the old folder or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write tensors with safetensors (shared storage is copied apart first, as safetensors requires)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or damaged file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path.name!r} in {path.parent.name!r}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"the weights file {path.name!r} in {path.parent.name!r} is damaged ({err})") from err


def require_folder(path: str | os.PathLike, files: list[str], what: str, retrain: str) -> Path:
    """Check that ``path`` is a folder holding ``files``; else raise a :class:`CheckpointError` saying how to fix it.

    ``what`` names the model ("a CLIP checkpoint"); ``retrain`` is the command that makes one.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path.name!r} does not exist; expected {what}. Make one with `{retrain}`.")
    if not path.is_dir():
        raise CheckpointError(f"{path.name!r} is a file, not a folder; expected {what} (a folder).")
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise CheckpointError(
            f"{path.name!r} is not {what}: {', '.join(missing)} missing. If it is an interrupted or "
            f"damaged save, retrain it with `{retrain}`.")
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The ``llmimg.json`` of a saved stage (stage, config, history)."""
    file = Path(path) / MANIFEST
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{Path(path).name!r} has no {MANIFEST}: not a complete llmimg model folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{MANIFEST} in {Path(path).name!r} is damaged ({err})") from err


def write_manifest(path: str | os.PathLike, stage: str, config: dict[str, Any], **extra: Any) -> None:
    """Write ``llmimg.json``; call it last, once everything else of the model is saved."""
    payload = {"stage": stage, "config": config, **extra}
    (Path(path) / MANIFEST).write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")


def config_key(stage: str, config: dict[str, Any]) -> str:
    """The cache folder name of a stage trained with ``config``: ``<stage>-<10 hex digits>``."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{stage}-{digest}"


def cached(stage: str, config: dict[str, Any], build: Callable[[Path, Path], None], *,
           profile: Any = None, force: bool = False) -> Path:
    """The cache folder of ``stage`` trained with ``config``, built first if it is not there.

    ``build(out, work)`` trains the model and saves it into the empty folder ``out``
    (it may keep resumable state in ``work``, which survives an interruption and is
    removed after success). ``force=True`` retrains even if a finished folder exists.
    """
    from llmimg.config import cache_dir

    root = cache_dir(profile)
    final = root / config_key(stage, config)
    if (final / MANIFEST).is_file() and not force:
        return final
    with _training_lock(root / f".{final.name}.lock", final.name):
        if (final / MANIFEST).is_file() and not force:
            return final  # another process trained it while we waited
        recovered = not force and _recover(root, final)
        clean_leftovers(root)
        work = root / f"{final.name}.partial"
        if not recovered:
            with atomic_directory(final) as out:
                build(out, work)
                if not (out / MANIFEST).is_file():
                    write_manifest(out, stage, config)
        shutil.rmtree(work, ignore_errors=True)
    return final


# What atomic_directory leaves when its process is killed: ``.<folder>.tmp-<pid>`` (being written)
# and ``.<folder>.old-<pid>`` (the folder it was replacing, killed during the swap).
_LEFTOVER = re.compile(r"^\.(?P<folder>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def _leftovers(root: Path) -> Iterator[tuple[Path, re.Match]]:
    """The temporary folders in ``root`` that processes no longer running left behind."""
    for path in root.glob(".*"):
        match = _LEFTOVER.match(path.name)
        if match and path.is_dir() and int(match["pid"]) != os.getpid() and not _alive(match["pid"]):
            yield path, match


def clean_leftovers(root: str | os.PathLike) -> list[str]:
    """Remove from ``root`` what killed runs left behind and return their names.

    A folder is removed only if the process named in it is gone, so a save or a
    training run in progress in another process is never touched.
    """
    removed = []
    for path, _ in _leftovers(Path(root)):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _recover(root: Path, final: Path) -> bool:
    """Move a finished model into place if a process was killed in the middle of moving it there.

    Between the two renames of :func:`atomic_directory` the new folder is complete (it
    has its manifest) but still hidden; a model that took minutes to train is not thrown away.
    """
    if (final / MANIFEST).is_file():
        return False
    finished = sorted((match["kind"] == "old", path) for path, match in _leftovers(root)  # the new one first
                      if match["folder"] == final.name and (path / MANIFEST).is_file())
    if not finished:
        return False
    shutil.rmtree(final, ignore_errors=True)
    os.replace(finished[0][1], final)
    return True


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def _training_lock(path: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock while one process trains ``name``; others wait for it instead of training twice."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; two concurrent runs would both train
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another process is training {name}; waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
