"""What only a CUDA GPU can show; skipped (with the reason) on machines without one, CI included.

docs/gpu-validation.md says how the notebooks are validated on a GPU; these tests keep the
bugs that validation found from coming back.
"""

from __future__ import annotations

import pytest
import torch

import llmimg.stages.generator as G

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_generator_trains_and_samples_on_cuda(tmp_path, monkeypatch):
    # Training calls the scheduler's add_noise on GPU tensors, which moves alphas_cumprod to the GPU;
    # the learning-curve evaluation inside training then sampled with it (an H200 run crashed there).
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LLMIMG_DEVICE", "cuda")
    gen = G.get("smoke", progress=False)
    assert gen.device.type == "cuda"
    images = gen.generate(["a small red circle in the center"], num_inference_steps=2, seed=0)
    assert images.shape[0] == 1
