"""Every failure of the command line is one line naming the file or folder and what to do (``llmimg.cli.errors``).

The table walks the errors the libraries underneath raise (safetensors, JSON, tokenizers,
the operating system) and the library's own, through ``main`` as the console script runs
it; the other tests are the refusals that must come before any work is done.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from safetensors import SafetensorError

from llmimg.cli import main
from llmimg.core.folders import StorageError
from llmimg.core.store import CheckpointError
from llmimg.core.text import UnknownWordsError


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def json_error() -> json.JSONDecodeError:
    try:
        json.loads('{"a": ')
    except json.JSONDecodeError as err:
        return err
    raise AssertionError("unreachable")


# (the error a command ends with, fragments the one line must hold)
TABLE = [
    (SafetensorError("Error while deserializing header: HeaderTooLarge"),
     ["a weights file cannot be read (Error while deserializing header: HeaderTooLarge)", "llmimg train STAGE --force",
      "model cache: '"]),
    (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
     ["cannot write: no space left on the device; free some space", "model cache: '"]),
    (Exception("File too large (os error 27)"),  # tokenizers' errors are bare Exceptions
     ["cannot write: a file grew past the size limit (ulimit -f)"]),
    (Exception("data did not match any variant of untagged enum ModelWrapper at line 1 column 2"),
     ["a tokenizer file cannot be read (data did not match any variant", "llmimg train STAGE --force"]),
    (json_error(), ["a JSON file is not valid JSON (Expecting value at line 1, column 7)", "llmimg train STAGE"]),
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.png"),
     ["cannot write '/data/x.png': no space left on the device; free some space or lift the file-size limit"]),
    (PermissionError(errno.EACCES, "Permission denied", "/data"),
     ["cannot write '/data': permission denied; make the folder writable or choose another"]),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "notes.json"),
     ["No such file or directory: 'notes.json'"]),
    (MemoryError(), ["out of memory: draw fewer images at once (--batch)"]),
    (CheckpointError("'clip-0' is damaged: tokenizer.json is missing; retrain it with `llmimg train clip --force`"),
     ["'clip-0' is damaged: tokenizer.json is missing; retrain it with `llmimg train clip --force` (model cache: '",
      "set by $LLMIMG_CACHE_DIR)"]),
    (StorageError("cannot write clip-0 into the model cache '/c': no space", "no space", "free some"),
     ["cannot write clip-0 into the model cache '/c': no space"]),
    (UnknownWordsError(["x" * 1_000_000], ["a", "red"]), ["unknown word 'xxxxxxxx", "…'", "only know these words"]),
    (ValueError("first line\nsecond line"), ["first line"]),
    (RuntimeError("y" * 10_000), ["yyyy", "…"]),
    (TypeError("'NoneType' object is not subscriptable"),
     ["TypeError: 'NoneType' object is not subscriptable; this is a bug in llmimg: please report it",
      "LLMIMG_TRACEBACK=1"]),
]


@pytest.mark.parametrize("error, fragments", TABLE, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(TABLE)])
def test_every_error_is_one_line_with_where_and_what_to_do(error, fragments, monkeypatch, capsys, tmp_path):
    from llmimg.cli import models

    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMIMG_TRACEBACK", raising=False)

    def fails(args):
        raise error
    monkeypatch.setattr(models, "train_command", fails)
    assert run(["train", "clip", "--profile", "smoke"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("llmimg: error: ")
    line = captured.err.strip()
    assert len(line) < 1000, len(line)  # a 1 MB word is not quoted whole
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    if isinstance(error, (CheckpointError, SafetensorError)):
        assert str(tmp_path / "smoke") in line  # the cache the command used
    if isinstance(error, StorageError):
        assert line == f"llmimg: error: {error}"  # it names its folder itself


def test_the_traceback_of_a_bug_is_one_setting_away(monkeypatch, capsys):
    from llmimg.cli import commands

    def bug(args):
        raise TypeError("oops")
    monkeypatch.setattr(commands, "preview_command", bug)
    monkeypatch.setenv("LLMIMG_TRACEBACK", "1")
    assert run(["data", "preview", "-o", "x.png"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith(
        "llmimg: error: TypeError: oops; this is a bug")


def test_eval_refuses_too_few_examples_before_training_anything(monkeypatch, capsys, tmp_path):
    from llmimg.stages import clip

    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(clip, "get", lambda *a, **k: pytest.fail("trained CLIP before refusing --n"))
    assert run(["eval", "clip", "--profile", "smoke", "--n", "10"]) == 1
    assert capsys.readouterr().err == "llmimg: error: llmimg eval clip: --n must be at least 100, got 10\n"


def test_generate_refuses_a_bad_prompt_before_training_anything(monkeypatch, capsys, tmp_path):
    from llmimg.pipelines import shapes

    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(shapes, "get", lambda *a, **k: pytest.fail("trained the pipeline before refusing the prompt"))
    assert run(["generate", "a red circel", "--profile", "smoke", "-o", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.startswith("llmimg: error: unknown word 'circel'")
    assert list(tmp_path.iterdir()) == []


def test_preview_refuses_a_missing_folder_as_generate_does(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert run(["data", "preview", "-o", "nowhere/grid.png"]) == 1
    assert capsys.readouterr().err == "llmimg: error: the folder 'nowhere' of the output file does not exist\n"
    assert list(tmp_path.iterdir()) == []


def test_changed_since_takes_a_revision_not_an_option(monkeypatch, capsys):
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("git was called"))
    assert run(["reproduce", "--changed-since=--all", "--no-progress"]) == 1
    assert capsys.readouterr().err == ("llmimg: error: --changed-since takes a git revision (a branch, tag or "
                                       "commit), got '--all'\n")


def test_a_relative_cache_folder_is_pinned_where_the_command_was_typed(monkeypatch, tmp_path):
    """Notebooks run in notebooks/ and accelerate starts other processes: they must all find the same cache."""
    import os

    from llmimg.core.config import CACHE_ENV, cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENV, "my-cache")
    assert run(["data", "preview", "--n", "1", "-o", "grid.png"]) == 0
    assert os.environ[CACHE_ENV] == str(tmp_path / "my-cache")  # what every process started from here reads
    monkeypatch.chdir(Path(tmp_path).parent)
    assert cache_dir("smoke", create=False) == tmp_path / "my-cache" / "smoke"


@pytest.mark.parametrize("argv", [["train", "distilled", "--world", "geneval"],
                                  ["train", "writer", "--world", "geneval"]])
def test_world_is_refused_for_stages_of_todays_world_only(argv, capsys):
    assert run(argv) == f"llmimg {argv[0]}: --world is for clip, llm, generator, pipeline and joint; {argv[1]} is " \
                        "trained on today's world only"
