"""Shared fixtures: trained smoke-profile stages, built once per test session in a temporary cache; and the
hypothesis profile every property test runs under."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (seeded from each test's own code), so CI is
# repeatable and a failure reproduces; deadline=None because a model call's time varies with load.
settings.register_profile("llmimg", derandomize=True, deadline=None)
settings.load_profile("llmimg")


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """A model cache of its own for the session, so tests never touch (or depend on) the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMIMG_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def smoke_clip(smoke_cache):
    from llmimg.stages import clip

    torch.set_num_threads(1)  # tiny models run faster on one thread than on two
    return clip.get("smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_llm(smoke_clip):
    from llmimg.stages import llm

    return llm.get("smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_pipeline(smoke_llm):
    """The smoke profile's whole pipeline (CLIP, LLM and, trained here, the generator) from the session cache."""
    from llmimg.pipelines import shapes

    return shapes.get("smoke", progress=False)


@pytest.fixture(scope="session")
def saved(smoke_pipeline, tmp_path_factory):
    """The smoke pipeline saved once with ``save_pretrained``; tests that damage it work on a copy."""
    path = tmp_path_factory.mktemp("pipelines") / "smoke-pipeline"
    smoke_pipeline.save_pretrained(path)
    return path


@pytest.fixture
def saved_before_records():
    """A function that makes a saved model folder look as it did before manifests recorded their files (schema 1).

    Such folders (the cache a run trained before this release) have no record to check:
    they must still load, and damage in them is caught by the loaders' own checks.
    """
    def strip(folder):
        manifest = folder / "llmimg.json"
        data = json.loads(manifest.read_text())
        data.pop("files", None)
        data.pop("checksum", None)
        manifest.write_text(json.dumps({**data, "schema": 1}))
        return folder

    return strip
