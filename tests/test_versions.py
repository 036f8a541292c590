"""``llmimg.core.versions``: the dtype keyword diffusers takes, on every diffusers pyproject.toml allows.

``make test`` runs this on CI's diffusers (0.42), ``make test-colab`` on Colab's (0.39).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from llmimg.core.versions import diffusers_dtype, release


@pytest.mark.parametrize("text, expected", [
    ("0.39.0", (0, 39)), ("0.43.0.dev0", (0, 43)), ("2.11.0+cu128", (2, 11)), ("v1.2", (1, 2)), ("5.15", (5, 15)),
])
def test_release_reads_major_and_minor(text, expected):
    assert release(text) == expected


@pytest.mark.parametrize("text", ["", "nightly", "1"])
def test_a_version_without_major_and_minor_is_refused(text):
    with pytest.raises(ValueError, match="not a version number"):
        release(text)


@pytest.mark.parametrize("version, keyword", [
    ("0.38.1", "torch_dtype"), ("0.39.0", "torch_dtype"), ("0.40.0", "dtype"), ("0.42.1", "dtype"),
    ("1.0.0.dev0", "dtype"),
])
def test_diffusers_dtype_is_the_keyword_that_version_takes(version, keyword):
    assert diffusers_dtype(torch.float16, version) == {keyword: torch.float16}
    assert diffusers_dtype(None, version) == {}


def test_the_generator_loads_in_the_dtype_asked_for_on_the_installed_diffusers(tmp_path):
    """On 0.39 a `dtype=` would be ignored (float32); on 0.42 `torch_dtype=` would warn that it is deprecated."""
    from llmimg.pipelines import pretrained

    config = pretrained.tiny_components(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd = pretrained.load_generator(config.generator, device="cpu", dtype=torch.bfloat16)
    assert sd.unet.dtype == sd.vae.dtype == sd.text_encoder.dtype == torch.bfloat16
    assert not [w for w in caught if "dtype" in str(w.message)], [str(w.message) for w in caught]
