"""The one place the command line turns an error into the one line it prints.

The library raises its own errors, whose messages already name the file or folder and
what to do: :class:`~llmimg.core.store.CheckpointError` (a damaged or missing model),
:class:`~llmimg.core.folders.StorageError` (a full or unwritable disk),
:class:`~llmimg.core.text.PromptError`, ``ValueError`` for bad settings. Errors of the
libraries underneath that reach the command anyway (safetensors, JSON, tokenizers, the
operating system) are put in the same words here, with the model cache the command was
using and the remedy. Anything else is a bug: one line saying so, and how to see the
traceback (``LLMIMG_TRACEBACK=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

RETRAIN = "if it is a model in the cache, retrain that stage with `llmimg train STAGE --force`"
REPORT = "this is a bug in llmimg: please report it (set LLMIMG_TRACEBACK=1 to see where it happened)"


def _kind(err: BaseException) -> str:
    """What raised ``err``: ``"llmimg"``, ``"safetensors"``, ``"tokenizers"`` (its errors are plain Exceptions), ..."""
    module = type(err).__module__ or ""
    if module.startswith("llmimg"):
        return "llmimg"
    if module.startswith("safetensors"):
        return "safetensors"
    if type(err) is Exception:  # tokenizers (Rust) raises bare Exceptions
        return "tokenizers"
    return module.split(".")[0]


def error_line(err: BaseException, cache: Path | None = None) -> tuple[str, bool]:
    """The one line (without ``llmimg: error:``) to print for ``err``, and whether it is unexpected (a bug).

    ``cache`` is the model cache the command was using, if any: a message about a
    damaged model, or an error of the libraries underneath, that does not name it gets it
    added, with where its location comes from (``$LLMIMG_CACHE_DIR``).
    """
    from llmimg.core.folders import StorageError, first_line, write_failure
    from llmimg.core.store import CheckpointError

    kind = _kind(err)
    failure = write_failure(err)
    where = _cache_note(cache)
    if isinstance(err, StorageError):  # it names the folder it could not write, the cache included
        return first_line(err, limit=600), False
    if isinstance(err, CheckpointError):  # a damaged model: say which cache it is in, if the message does not
        line = first_line(err, limit=600)
        return (line if cache is None or str(cache) in line else f"{line} ({where})"), False
    if failure is not None:  # the system refused a write, whichever library met it
        reason, remedy = failure
        target = getattr(err, "filename", None)
        at = f" {str(target)!r}" if target else ""
        return f"cannot write{at}: {reason}; {remedy}" + (f" ({where})" if cache else ""), False
    if kind == "safetensors":
        return (f"a weights file cannot be read ({first_line(err)}); {RETRAIN}"
                + (f" ({where})" if cache else "")), False
    if kind == "tokenizers":
        return (f"a tokenizer file cannot be read ({first_line(err)}); {RETRAIN}"
                + (f" ({where})" if cache else "")), False
    if isinstance(err, json.JSONDecodeError):
        return (f"a JSON file is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {RETRAIN}"
                + (f" ({where})" if cache else "")), False
    if isinstance(err, MemoryError):
        return "out of memory: draw fewer images at once (--batch) or use a smaller profile", False
    if isinstance(err, OSError):
        name = getattr(err, "filename", None)
        line = f"{err.strerror}: {str(name)!r}" if err.strerror and name else first_line(err)
        return line, False
    if isinstance(err, (ValueError, RuntimeError)) or kind == "llmimg":
        return first_line(err, limit=600), False
    return f"{type(err).__name__}: {first_line(err)}; {REPORT}", True


def _cache_note(cache: Path | None) -> str:
    if cache is None:
        return ""
    from llmimg.core.config import cache_origin

    return f"model cache: {str(cache)!r}, {cache_origin()}"


__all__ = ["error_line"]
