"""Writing model folders without harming what is already there, and reading back only what was written.

Three promises, one module each keeps:

* **Nothing of the user's is removed.** :func:`save_into` writes a model into a folder
  the user named: into it directly when it is empty or new, else into a staging folder
  beside it whose entries then replace the same-named entries of the target, one by
  one, the folder's *marker* (``llmimg.json``, ``model_index.json``, ...) last. Files of
  the user's beside the model stay; a folder that is not empty and holds no such model
  is refused before anything is written.
* **A write that fails is one line.** A full disk, a file-size limit, a read-only or
  unwritable folder: whatever library met it (Python's ``open``, safetensors,
  tokenizers), :func:`writing` turns it into a :class:`StorageError` naming the folder,
  why, and what to do.
* **What is loaded is what was saved.** :func:`file_records` notes the size and SHA-256
  of every file a save wrote (the manifest keeps them, :mod:`llmimg.core.store`);
  :func:`verify_files` checks them before a model is loaded, so a flipped byte in a
  weights or config file is a :class:`~llmimg.core.store.CheckpointError`, never a model
  that silently draws something else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

# Why the operating system refuses a write, in words, and what the user can do about it.
_FULL = "free some space or lift the file-size limit"
_LOCKED = "make the folder writable or choose another"
WRITE_FAILURES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", _FULL),
    errno.EDQUOT: ("the disk quota is used up", _FULL),
    errno.EFBIG: ("a file grew past the size limit (ulimit -f)", _FULL),
    errno.EROFS: ("the file system is read-only", _LOCKED),
    errno.EACCES: ("permission denied", _LOCKED),
    errno.EPERM: ("the operation is not permitted", _LOCKED),
}
# safetensors and tokenizers report an OS error as text: "... File too large (os error 27)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class StorageError(OSError):
    """A file or folder that could not be written (full disk, size limit, read-only): one line, where and what to do.

    ``reason`` is why, in words; ``remedy`` what to do. It is an ``OSError``, so code
    catching the operating system's errors catches it too.
    """

    def __init__(self, message: str, reason: str = "", remedy: str = "") -> None:
        super().__init__(message)
        self.reason, self.remedy = reason, remedy

    def __str__(self) -> str:
        return str(self.args[0])


def first_line(err: BaseException, limit: int = 240) -> str:
    """An error as one short line: its first line (or its type's name), cut at ``limit`` characters."""
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else type(err).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"


def write_failure(err: BaseException) -> tuple[str, str] | None:
    """``(why, what to do)`` if ``err`` is the system refusing a write, whichever library met it; else None."""
    if isinstance(err, StorageError):
        return err.reason, err.remedy
    code = err.errno if isinstance(err, OSError) else None
    if code is None and (match := _OS_ERROR.search(str(err))):
        code = int(match[1])
    return WRITE_FAILURES.get(code) if code is not None else None


@contextmanager
def writing(folder: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Turn a write the operating system refuses inside the block into one :class:`StorageError` naming ``folder``.

    ``what`` says what was being written (``"the CLIP"``); other errors pass unchanged.
    """
    try:
        yield
    except Exception as err:
        failure = write_failure(err)
        if failure is None or isinstance(err, StorageError):
            raise
        reason, remedy = failure
        label = f"{what} into {str(folder)!r}" if what else f"into {str(folder)!r}"
        raise StorageError(f"cannot write {label}: {reason}; {remedy}", reason, remedy) from err


def current_umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _clear(folder: Path) -> None:
    """Remove everything inside ``folder`` (which this process filled) but the folder itself."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def json_says(path: Path, key: str, *values: Any) -> bool:
    """Whether the JSON file ``path`` is an object whose ``key`` is one of ``values`` (False if unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and key in data and data[key] in values


def save_into(target: str | os.PathLike, write: Callable[[Path], object], *, markers: Sequence[str],
              what: str, holds: Callable[[Path], bool]) -> Path:
    """Save a model into the folder ``target`` with ``write(folder)``, replacing only the entries it writes.

    ``markers`` are the files that make a folder a complete model, in the order they
    are put in place (the last one is the folder's proof of being complete, e.g.
    ``model_index.json``). A new ``target`` is written in a staging folder beside it and
    renamed into place whole. An empty one is written directly (emptied again if the
    write fails; ``write`` should write the markers last). A ``target`` holding a model
    of this kind (``holds(target)``, which reads its markers: another model's folder is
    not one to write into) gets the new entries through a staging folder: the
    old markers go first, the other entries replace their namesakes one by one, the
    markers come last, so a crash in between leaves no folder that looks complete. A
    non-empty ``target`` without the marker is refused with a ``ValueError`` before
    anything is written; ``what`` names the model in messages (``"CLIP"``,
    ``"pipeline"``). Write failures are :class:`StorageError`.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{str(target)!r} is a file, not a folder: save the {what} into a folder")
    occupied = target.is_dir() and any(target.iterdir())
    if occupied and not ((target / markers[-1]).is_file() and holds(target)):
        raise ValueError(f"the folder {str(target)!r} is not empty and holds no saved {what}: "
                         "save into a new or empty folder (nothing was written)")
    with writing(target, f"the {what}"):
        if target.is_dir() and not occupied:  # an empty folder (the cache's, or the user's): nothing to keep
            try:
                write(target)
            except BaseException:
                _clear(target)
                raise
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".saving", dir=target.parent))
        try:
            write(staging)
            if occupied:
                _move_entries(staging, target, markers)
            else:  # a new folder appears whole, in one rename, with the usual permissions (mkdtemp's are 0700)
                os.chmod(staging, 0o777 & ~current_umask())
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_entries(source: Path, target: Path, markers: Sequence[str]) -> None:
    """Move every entry of ``source`` into ``target``, replacing namesakes; old markers out first, new ones last."""
    for name in markers:  # from here on the target does not look complete until the new markers arrive
        (target / name).unlink(missing_ok=True)
    entries = sorted(source.iterdir(), key=lambda p: markers.index(p.name) + 1 if p.name in markers else 0)
    old = source / ".replaced"  # the namesakes the new entries replace: removed with the staging folder
    for entry in entries:
        destination = target / entry.name
        if destination.is_symlink() or (destination.exists() and (destination.is_dir() or entry.is_dir())):
            old.mkdir(exist_ok=True)
            os.replace(destination, old / entry.name)
        os.replace(entry, destination)


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
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; keep the usual permissions
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


# -- checksums ------------------------------------------------------------------------------
def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """The size in bytes and the SHA-256 of a file, as the manifest keeps them."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": os.path.getsize(path), "sha256": digest}


def file_records(folder: str | os.PathLike, exclude: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """:func:`file_record` of every file under ``folder`` (paths relative to it, with ``/``), but ``exclude``."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): file_record(path)
            for path in sorted(folder.rglob("*")) if path.is_file() and path.relative_to(folder).as_posix()
            not in exclude}


def check_records(files: Any) -> str | None:
    """Why ``files`` is not a valid record of files (a hostile or damaged manifest), or None if it is."""
    if not isinstance(files, Mapping):
        return "'files' is not a mapping of file names"
    for name, record in files.items():
        pure = PurePosixPath(name) if isinstance(name, str) else None
        if pure is None or not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
            return f"'files' names {name!r}, which is not a file inside the folder"
        if not (isinstance(record, Mapping) and isinstance(record.get("size"), int)
                and not isinstance(record.get("size"), bool) and isinstance(record.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", record["sha256"])):
            return f"the record of {name!r} is not a size and a SHA-256"
    return None


def verify_files(folder: str | os.PathLike, files: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first file of ``files`` under ``folder`` that is missing or not as recorded, with why; None if all match.

    The size is compared first (free), then the SHA-256 of the file as it is read.
    """
    folder = Path(folder)
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != record["size"]:
            return f"{name} has {path.stat().st_size} bytes, not the {record['size']} that were saved"
        if file_record(path)["sha256"] != record["sha256"]:
            return f"{name} is not the file that was saved (its SHA-256 differs)"
    return None


__all__ = ["StorageError", "WRITE_FAILURES", "atomic_directory", "atomic_write", "check_records", "current_umask",
           "file_record", "file_records", "first_line", "json_says", "save_into", "verify_files", "write_failure",
           "writing"]
