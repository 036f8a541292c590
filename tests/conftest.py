"""Shared fixtures: trained smoke-profile stages, built once per test session in a temporary cache."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """A model cache of its own for the session, so tests never touch (or depend on) the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMIMG_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def smoke_clip(smoke_cache):
    from llmimg import clip

    torch.set_num_threads(1)  # tiny models run faster on one thread than on two
    return clip.get("smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_llm(smoke_clip):
    from llmimg import llm

    return llm.get("smoke", progress=False)


@pytest.fixture(scope="session")
def smoke_pipeline(smoke_llm):
    """The smoke profile's whole pipeline (CLIP, LLM and, trained here, the generator) from the session cache."""
    from llmimg import pipeline

    return pipeline.get("smoke", progress=False)
