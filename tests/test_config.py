"""Profiles, device choice, seeding and the cache folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from llmimg.core.config import (
    PROFILES,
    Profile,
    cache_dir,
    describe_environment,
    get_device,
    get_profile,
    project_root,
)


def test_profile_from_argument_environment_and_default(monkeypatch):
    monkeypatch.delenv("LLMIMG_PROFILE", raising=False)
    assert get_profile().name == "default"
    monkeypatch.setenv("LLMIMG_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    assert get_profile("FULL").name == "full"  # the argument wins over the environment
    assert get_profile(Profile("default")).name == "default"


def test_unknown_profile_names_its_source(monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'fast' .*argument.*smoke, default, full"):
        get_profile("fast")
    monkeypatch.setenv("LLMIMG_PROFILE", "tiny")
    with pytest.raises(ValueError, match=r"\$LLMIMG_PROFILE"):
        get_profile()


def test_pick_chooses_per_profile():
    assert [Profile(p).pick(smoke=1, default=2, full=3) for p in PROFILES] == [1, 2, 3]


def test_device_choice_and_override(monkeypatch):
    monkeypatch.delenv("LLMIMG_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert get_device().type == expected
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LLMIMG_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")


def test_the_sizes_table_has_a_value_for_every_profile():
    from llmimg.core.config import PROFILES, SIZES

    assert all(len(values) == len(PROFILES) for values in SIZES.values())
    assert Profile("default").size("llm.eval_n") == 500  # notebook 04, `llmimg eval llm` and the reference agree
    assert Profile("smoke").size("clip.model") == "shapes-clip-tiny"
    with pytest.raises(KeyError, match="no size named 'clip.stepz'.*clip.steps"):
        Profile("smoke").size("clip.stepz")


def test_cache_dir_per_profile_and_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    assert cache_dir("smoke") == tmp_path / "smoke" and (tmp_path / "smoke").is_dir()
    assert cache_dir("full", create=False) == tmp_path / "full" and not (tmp_path / "full").exists()
    monkeypatch.delenv("LLMIMG_CACHE_DIR")
    root = project_root()
    if root is not None:  # a source checkout keeps the cache in data/cache (ignored by git)
        assert cache_dir("smoke", create=False) == root / "data" / "cache" / "smoke"


def test_environment_description_names_versions_device_profile():
    info = describe_environment("smoke")
    assert info["profile"] == "smoke" and info["device"] in ("cpu", "cuda", "mps")
    assert info["packages"]["torch"] == torch.__version__.split("+")[0]


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    from llmimg.core.store import atomic_write

    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as f:
        f.write("first")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "first" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"  # the old content survives an interrupted write
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary left behind
