"""Saved models: atomic files and folders, safetensors, one manifest, and the per-profile model cache.

A trained model is a folder in the format of its library (``save_pretrained`` for
transformers and diffusers, open_clip's ``local-dir`` layout for CLIP) plus
``llmimg.json``, the :class:`Manifest`: the stage, its format version, its full
configuration, the cache folders of the stages it was trained on (``upstream``), and
what its training left (history, seconds, learning curve, metrics). Every saved folder
of the library has this one manifest; it is written last inside a temporary folder
that is then renamed into place, so a folder that has it is complete and an
interrupted run leaves no half model.

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
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

MANIFEST = "llmimg.json"


SCHEMA = 1  # the manifest's own layout


class CheckpointError(RuntimeError):
    """A saved model that is missing, incomplete or corrupt; the message says which and what to do."""


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success move it over ``path``, on error delete it.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
    The parent folder is created if needed; the file gets the usual permissions (umask).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; keep the usual permissions
        text = {"encoding": encoding or "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


@dataclass
class Manifest:
    """``llmimg.json``: what a saved model is and how it came about (the same fields for every stage).

    ``stage`` and ``format`` say what wrote the folder (``format`` is the stage's version,
    bumped when its code changes what a trained model is); ``config`` is the full
    configuration; ``upstream`` maps each stage it was trained on to that stage's cache
    folder name (``{"clip": "clip-3f2a9c01d2"}``); ``history`` the training loss by step;
    ``seconds`` the training time; ``curve`` scores measured along training; ``metrics``
    the evaluation after training; ``extra`` anything a stage adds (e.g. a distilled
    student's phases).
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

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, **asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "the manifest") -> Manifest:
        """Parse and check the shape of a manifest; anything else is a :class:`CheckpointError` naming ``where``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{where} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise CheckpointError(f"{where} is not an llmimg manifest of schema {SCHEMA}")
        types = {"stage": str, "format": int, "config": dict, "upstream": dict, "history": list,
                 "curve": list, "metrics": dict, "extra": dict}
        for name, kind in types.items():
            required = name in ("stage", "format", "config")
            if (required and name not in data) or (name in data and not isinstance(data[name], kind)):
                raise CheckpointError(f"{where}: {name!r} is missing or is not a {kind.__name__}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("upstream", {}).items()):
            raise CheckpointError(f"{where}: 'upstream' must map stage names to folder names")
        if data.get("seconds") is not None and not isinstance(data["seconds"], (int, float)):
            raise CheckpointError(f"{where}: 'seconds' is not a number")
        return cls(**{k: v for k, v in data.items() if k != "schema"})


def write_manifest(path: str | os.PathLike, manifest: Manifest) -> None:
    """Write ``llmimg.json`` into ``path``; call it last, once everything else of the model is saved."""
    (Path(path) / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")


def read_manifest(path: str | os.PathLike, stage: str | None = None) -> Manifest:
    """The :class:`Manifest` of a saved model (of ``stage``, when given); damage is a :class:`CheckpointError`."""
    path = Path(path)
    file = path / MANIFEST
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path.name!r} has no {MANIFEST}: not a complete llmimg model folder") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{MANIFEST} in {path.name!r} cannot be read ({err})") from err
    manifest = Manifest.from_json(text, f"{MANIFEST} in {path.name!r}")
    if stage is not None and manifest.stage != stage:
        raise CheckpointError(f"{path.name!r} holds a {manifest.stage} model, not a {stage}")
    return manifest


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

    final = cache_dir(profile) / folder_name(key)
    return final if (final / MANIFEST).is_file() else None


def cached(key: dict[str, Any], build: Callable[[Path, Path], None], *, profile: Any = None,
           force: bool = False) -> Path:
    """The cache folder of the model ``key`` identifies (:func:`cache_key`), built first if it is not there.

    ``build(out, work)`` trains the model and saves it, manifest last, into the empty
    folder ``out`` (it may keep resumable state in ``work``, which survives an
    interruption and is removed after success). ``force=True`` retrains even if a
    finished folder exists.
    """
    from llmimg.core.config import cache_dir

    root = cache_dir(profile)
    final = root / folder_name(key)
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
                    raise RuntimeError(f"building {final.name} wrote no {MANIFEST}: the stage's save is incomplete")
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
