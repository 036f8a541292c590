"""The ``llmimg`` command line, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmimg import __version__


def llmimg(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmimg", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_version():
    result = llmimg("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"llmimg {__version__}"


def test_preview_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "sub" / "b.png", tmp_path / "c.png"
    assert llmimg("data", "preview", "--n", "6", "--seed", "4", "-o", str(a)).returncode == 0
    assert llmimg("data", "preview", "--n", "6", "--seed", "4", "-o", str(b)).returncode == 0
    assert llmimg("data", "preview", "--n", "6", "--seed", "5", "-o", str(c)).returncode == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "preview", "--n", "0", "-o", "x.png"], "between 1 and 256"),
        (["data", "preview", "--n", "two", "-o", "x.png"], "expected a whole number"),
        (["data", "preview", "--seed", "-3", "-o", "x.png"], "non-negative"),
        (["data", "preview", "-o", "x.jpg"], "must end in .png"),
        (["data", "preview", "--split", "test", "-o", "x.png"], "invalid choice"),
        (["reproduce", "--profile", "huge"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, args, message):
    result = llmimg(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_bench_json():
    result = llmimg("bench", "--n", "200", "--repeats", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["data_images_per_s"] > 0 and data["data_threads"] == 1


def test_reproduce_unknown_notebook_is_a_one_line_error():
    result = llmimg("reproduce", "--only", "99", "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no notebook matches '99'" in result.stderr and "00_welcome" in result.stderr
