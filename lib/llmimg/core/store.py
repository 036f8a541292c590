"""Saved models: atomic files and folders, safetensors, one manifest, and the per-profile model cache.

A trained model is a folder in the format of its library (``save_pretrained`` for
transformers and diffusers, open_clip's ``local-dir`` layout for CLIP) plus
``llmimg.json``, the :class:`Manifest`: the stage, its format version, its full
configuration, the cache folders of the stages it was trained on (``upstream``), and
what its training left (history, seconds, learning curve, metrics), and the size and
SHA-256 of every file the save wrote (``files``), which :func:`read_manifest` checks
before anything is loaded. Every saved folder of the library has this one manifest; it
is written last (into a temporary cache folder that is then renamed into place, or
last into a folder a user named, :func:`save_model`), so a folder that has it is
complete and an interrupted run leaves no half model.

**The cache** (:func:`llmimg.core.config.cache_dir`) names each folder by stage and a
hash of the model's *identity* (:func:`cache_key`): the stage, its format version (bumped
whenever a change to the code makes old models stale), the configuration fields that
define the model (:meth:`llmimg.core.training.StageConfig.identity`; logging and
evaluation cadence do not) and the upstream folders. :func:`cached` returns the folder,
training it first when it is missing; a stage's ``get(profile)`` goes through here.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

# atomic_write and atomic_directory live with the other folder writers; they are imported from here as well.
from llmimg.core.folders import (StorageError, atomic_directory, atomic_write, check_records, file_records, json_says,
                                 save_into, verify_files, write_failure)

MANIFEST = "llmimg.json"


# The manifest's own layout. 2 added ``files``; a manifest of schema 1 (saved before) has no
# record to check and still loads.
SCHEMA = 3
READABLE_SCHEMAS = (1, 2, 3)


class CheckpointError(RuntimeError):
    """A saved model that is missing, incomplete or corrupt; the message says which and what to do."""


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


@dataclass
class Manifest:
    """``llmimg.json``: what a saved model is and how it came about (the same fields for every stage).

    ``stage`` and ``format`` say what wrote the folder (``format`` is the stage's version,
    bumped when its code changes what a trained model is); ``config`` is the full
    configuration; ``upstream`` maps each stage it was trained on to that stage's cache
    folder name (``{"clip": "clip-3f2a9c01d2"}``); ``history`` the training loss by step;
    ``seconds`` the training time; ``curve`` scores measured along training; ``metrics``
    the evaluation after training; ``extra`` anything a stage adds (e.g. a distilled
    student's phases); ``files`` the size and SHA-256 of every file the save wrote, by
    path relative to the folder (:func:`write_manifest` fills it in). The JSON also holds
    the SHA-256 of all these fields (``checksum``), so a changed value is caught as damage.
    """

    stage: str
    format: int
    config: dict[str, Any]
    upstream: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"schema": SCHEMA, **asdict(self)}
        return json.dumps({**data, "checksum": _checksum(data)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "the manifest") -> Manifest:
        """Parse and check the shape of a manifest; anything else is a :class:`CheckpointError` naming ``where``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{where} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("schema") not in READABLE_SCHEMAS:
            raise CheckpointError(f"{where} is not an llmimg manifest (schema "
                                  f"{' or '.join(map(str, READABLE_SCHEMAS))})")
        types = {"stage": str, "format": int, "config": dict, "upstream": dict, "history": list,
                 "curve": list, "metrics": dict, "extra": dict, "files": dict}
        unknown = sorted(set(data) - set(types) - {"schema", "seconds", "checksum"})
        if unknown:
            raise CheckpointError(f"{where} has fields no manifest has: {', '.join(map(repr, unknown))}")
        for name, kind in types.items():
            required = name in ("stage", "format", "config")
            if (required and name not in data) or (name in data and not isinstance(data[name], kind)) \
                    or (kind is int and isinstance(data.get(name), bool)):
                raise CheckpointError(f"{where}: {name!r} is missing or is not a {kind.__name__}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("upstream", {}).items()):
            raise CheckpointError(f"{where}: 'upstream' must map stage names to folder names")
        if data.get("seconds") is not None and (isinstance(data["seconds"], bool)
                                                or not isinstance(data["seconds"], (int, float))):
            raise CheckpointError(f"{where}: 'seconds' is not a number")
        if "files" in data and (problem := check_records(data["files"])):
            raise CheckpointError(f"{where}: {problem}")
        if data["schema"] >= 3:  # since schema 3 the manifest checks itself: a changed value is damage too
            if "files" not in data:
                raise CheckpointError(f"{where}: 'files' is missing")
            body = {k: v for k, v in data.items() if k != "checksum"}
            if data.get("checksum") != _checksum(body):
                raise CheckpointError(f"{where} was changed after it was saved (its checksum does not match)")
        return cls(**{k: v for k, v in data.items() if k not in ("schema", "checksum")})


def _checksum(data: dict[str, Any]) -> str:
    """SHA-256 of a manifest's fields (all but the checksum itself), written canonically."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def write_manifest(path: str | os.PathLike, manifest: Manifest) -> None:
    """Write ``llmimg.json`` into ``path``, recording every other file there; call it last, once the model is saved.

    The record (:attr:`Manifest.files`) is what :func:`read_manifest` verifies, so
    ``path`` must hold only what this save wrote: a fresh folder (the cache's, or the
    staging folder of :func:`save_model`).
    """
    path = Path(path)
    recorded = replace(manifest, files=file_records(path, exclude=(MANIFEST,)))
    (path / MANIFEST).write_text(recorded.to_json(), encoding="utf-8")


def read_manifest(path: str | os.PathLike, stage: str | None = None, fix: str = "") -> Manifest:
    """The :class:`Manifest` of a saved model (of ``stage``, when given), its files checked against their record.

    Damage of any kind (no manifest, a manifest of the wrong shape, a recorded file
    missing or changed since it was saved) is a :class:`CheckpointError` naming the
    folder; ``fix`` says how to make it again (``"retrain it with `llmimg train clip
    --force`"``). A folder saved before the record existed (schema 1) has nothing to
    verify and loads as before; one saved before the manifest's own checksum (schema 2)
    has its files verified but not the manifest's values.
    """
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    file = path / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path.name!r} has no {MANIFEST}: not a complete llmimg model folder{tail}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{MANIFEST} in {path.name!r} cannot be read ({err}){tail}") from err
    try:
        manifest = Manifest.from_json(text, f"{MANIFEST} in {path.name!r}")
    except CheckpointError as err:
        raise CheckpointError(f"{err}{tail}") from None
    if stage is not None and manifest.stage != stage:
        raise CheckpointError(f"{path.name!r} holds a {manifest.stage} model, not a {stage}{tail}")
    problem = verify_files(path, manifest.files)
    if problem:
        raise CheckpointError(f"{path.name!r} is damaged: {problem}{tail}")
    return manifest


def save_model(path: str | os.PathLike, write: Callable[[Path], object], manifest: Manifest, what: str) -> Path:
    """Save a model into ``path`` with ``write(folder)`` and the manifest last; nothing else in ``path`` is touched.

    The stages' ``save_pretrained`` go through here (:func:`~llmimg.core.folders.save_into`):
    a new or empty ``path`` is written directly; one holding a model (an ``llmimg.json``)
    gets the new files in place of the old ones, the user's other files kept; any other
    non-empty folder is refused. ``what`` names the model (``"CLIP"``). A full disk or
    an unwritable folder is a one-line :class:`~llmimg.core.folders.StorageError`.
    """
    def write_all(folder: Path) -> None:
        write(folder)
        write_manifest(folder, manifest)

    return save_into(path, write_all, markers=(MANIFEST,), what=what,
                     holds=lambda folder: json_says(folder / MANIFEST, "stage", manifest.stage))


def upstream_folder(path: str | os.PathLike, manifest: Manifest, stage: str) -> Path:
    """The cache folder of ``stage`` that the model in ``path`` was trained on: a sibling of ``path``.

    The name comes from the manifest, so it is checked to be a plain folder name: a
    damaged or hostile manifest cannot point outside the cache.
    """
    name = manifest.upstream.get(stage)
    if not name:
        raise CheckpointError(f"{Path(path).name!r} does not say which {stage} it was trained on")
    if name in (".", "..") or Path(name).name != name or "/" in name or "\\" in name:
        raise CheckpointError(f"{Path(path).name!r} names its {stage} {name!r}, which is not a folder name")
    return Path(path).parent / name


def cache_key(stage: str, format: int, identity: dict[str, Any], upstream: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    """What identifies a trained model in the cache: its stage and format, its identity fields, its upstream folders."""
    return {"stage": stage, "format": format, "config": identity, "upstream": dict(sorted((upstream or {}).items()))}


def folder_name(key: dict[str, Any]) -> str:
    """The cache folder name of a :func:`cache_key`: ``<stage>-<10 hex digits>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return f"{key['stage']}-{digest}"


def cached_folder(key: dict[str, Any], profile: Any = None) -> Path | None:
    """The finished cache folder of ``key``, or None if it has not been trained."""
    from llmimg.core.config import cache_dir

    final = cache_dir(profile, create=False) / folder_name(key)
    return final if (final / MANIFEST).is_file() else None


def cached(key: dict[str, Any], build: Callable[[Path, Path], None], *, profile: Any = None,
           force: bool = False) -> Path:
    """The cache folder of the model ``key`` identifies (:func:`cache_key`), built first if it is not there.

    ``build(out, work)`` trains the model and saves it, manifest last, into the empty
    folder ``out`` (it may keep resumable state in ``work``, which survives an
    interruption and is removed after success). ``force=True`` retrains even if a
    finished folder exists. A cache that cannot be written (full, read-only) is one
    :class:`~llmimg.core.folders.StorageError` naming the cache and ``$LLMIMG_CACHE_DIR``.
    """
    from llmimg.core.config import cache_dir

    root = cache_dir(profile, create=False)
    final = root / folder_name(key)
    if (final / MANIFEST).is_file() and not force:
        return final  # a finished model is read, never written: a read-only cache still serves it
    with _writing_cache(root, final.name):
        root.mkdir(parents=True, exist_ok=True)
        with _training_lock(root / f".{final.name}.lock", final.name):
            if (final / MANIFEST).is_file() and not force:
                return final  # another process trained it while we waited
            recovered = not force and _recover(root, final)
            clean_leftovers(root, held=final.name)
            work = root / f"{final.name}.partial"
            if not recovered:
                with atomic_directory(final) as out:
                    build(out, work)
                    if not (out / MANIFEST).is_file():
                        raise RuntimeError(f"building {final.name} wrote no {MANIFEST}: the stage's save is "
                                           "incomplete")
            shutil.rmtree(work, ignore_errors=True)
    return final


@contextmanager
def _writing_cache(root: Path, name: str) -> Iterator[None]:
    """Turn a write the system refuses while building ``name`` into one line naming the cache and how to move it."""
    try:
        yield
    except Exception as err:
        failure = write_failure(err)
        # A file outside the cache (a data file read while training) is not the cache's to blame.
        elsewhere = isinstance(err, OSError) and isinstance(err.filename, (str, bytes)) \
            and root.resolve() not in Path(os.fsdecode(err.filename)).resolve().parents
        if failure is None or elsewhere:
            raise
        from llmimg.core.config import CACHE_ENV, cache_origin

        reason, remedy = failure
        raise StorageError(f"cannot write {name} into the model cache {str(root)!r} ({cache_origin()}): {reason}; "
                           f"{remedy}, or set ${CACHE_ENV} to another folder", reason, remedy) from err


# What atomic_directory leaves when its process is killed: ``.<folder>.tmp-<pid>`` (being written)
# and ``.<folder>.old-<pid>`` (the folder it was replacing, killed during the swap).
_LEFTOVER = re.compile(r"^\.(?P<folder>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def _leftovers(root: Path, held: str | None = None) -> Iterator[tuple[Path, re.Match]]:
    """The temporary folders in ``root`` that no running process is writing (``held``: a model whose lock we hold)."""
    for path in root.glob(".*"):
        match = _LEFTOVER.match(path.name)
        if match and path.is_dir() and _stale(root, match, held):
            yield path, match


def _stale(root: Path, match: re.Match, held: str | None) -> bool:
    """Whether the leftover ``match`` names was left by a run that is over.

    Its process being gone says so. A process of that number still running may be
    another one (numbers are reused): then the model's training lock decides, since
    every run writing into the cache holds it (a resumable state ``<model>.partial``
    falls under its model's lock).
    """
    pid = int(match["pid"])
    if pid == os.getpid():
        return False  # this process's own save, in progress
    if not _alive(pid):
        return True
    owner = match["folder"].removesuffix(".partial")
    if not _have_locks():
        return False  # without locks nothing tells a reused number from a live run: keep it
    return owner == held or _lock_is_free(root / f".{owner}.lock")


def clean_leftovers(root: str | os.PathLike, held: str | None = None) -> list[str]:
    """Remove from ``root`` what killed runs left behind and return their names.

    A folder is removed only if no run is writing it: the process named in it is gone,
    or, when that number now belongs to another process, no one holds the model's
    training lock (``held`` names a model whose lock the caller holds). A save or a
    training run in progress is never touched.
    """
    removed = []
    for path, _ in _leftovers(Path(root), held):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _recover(root: Path, final: Path) -> bool:
    """Move a finished model into place if a process was killed in the middle of moving it there.

    Between the two renames of :func:`atomic_directory` the new folder is complete (it
    has its manifest) but still hidden; a model that took minutes to train is not thrown away.
    Called with ``final``'s lock held.
    """
    if (final / MANIFEST).is_file():
        return False
    finished = sorted((match["kind"] == "old", path) for path, match in _leftovers(root, held=final.name)
                      if match["folder"] == final.name and (path / MANIFEST).is_file())  # the new one first
    if not finished:
        return False
    shutil.rmtree(final, ignore_errors=True)
    os.replace(finished[0][1], final)
    return True


def _alive(pid: int | str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _have_locks() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:  # Windows
        return False
    return True


def _lock_is_free(path: Path) -> bool:
    """Whether no process holds the training lock file ``path`` (one that was never created is free)."""
    import fcntl

    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: keep the folder


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


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide transformers' and diffusers' progress bars and notes (below errors) for the block, then restore them.

    Our models are small and load in milliseconds; the libraries' loading bars and their
    notes about settings chosen on purpose would only clutter notebooks. Nothing outside
    the block is changed (importing the library changes no logging settings).
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libs = (diffusers_logging, transformers_logging)
    saved = [(lib, lib.is_progress_bar_enabled(), lib.get_verbosity()) for lib in libs]
    for lib in libs:
        lib.disable_progress_bar()
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, bar, level in saved:
            if bar:
                lib.enable_progress_bar()
            lib.set_verbosity(level)


__all__ = ["CheckpointError", "MANIFEST", "Manifest", "SCHEMA", "StorageError", "atomic_directory", "atomic_write",
           "cache_key", "cached", "cached_folder", "clean_leftovers", "folder_name", "load_tensors", "quiet_libraries",
           "read_manifest", "require_folder", "save_model", "save_tensors", "upstream_folder", "write_manifest"]
