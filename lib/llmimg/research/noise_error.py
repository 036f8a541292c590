"""Why the epsilon recipe collapses, tested rather than only explained (notebook 05).

Sampling starts at t = 999, where the cosine schedule's ᾱ is about 2e-9. A network that
predicts the noise ε̂ gives the clean image only through x̂₀ = (x_t − √(1−ᾱ)·ε̂)/√ᾱ, so an
error σ·δ in ε̂ becomes an error √((1−ᾱ)/ᾱ)·σ·δ in x̂₀: about 20,000·σ·δ on the first
step, 16·σ·δ on the second (25 steps). The claim to test: that first step is what breaks it.

The test needs no second training run. :func:`noise_error` makes the trained generator,
which predicts x₀, answer inside a ``with`` block as an ε-network with error σ would: its
output moves by exactly the x₀ error that σ·δ in ε̂ implies (δ standard normal). Drawn once
with the error at every step and once at every step but the first, from the same noise,
the explanation predicts that the first arm collapses where the second keeps the clean
model's score. :func:`noise_error_test` draws the arms and scores them per image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from llmimg.core.evaluation import shapes_eval

__all__ = ["ARMS", "noise_error", "noise_error_test"]
ARMS = ("every step", "every step but the first")


@contextmanager
def noise_error(gen: Any, sigma: float, *, first_step: bool = True, seed: int = 0) -> Iterator[None]:
    """Within the block, ``gen`` (an x₀-predicting generator) errs as an ε-network of error ``sigma`` would.

    ``first_step=False`` leaves the first step (t = T − 1) exact. The errors are drawn from
    their own generator seeded with ``seed``, so the global random state is untouched.
    """
    if gen.config.prediction_type != "sample":
        raise ValueError(f"noise_error needs a generator that predicts x0 (prediction_type 'sample'), "
                         f"got {gen.config.prediction_type!r}")
    if not sigma >= 0:
        raise ValueError(f"sigma is a standard deviation, at least 0, got {sigma!r}")
    unet, abar = gen.unet, gen.scheduler.alphas_cumprod.cpu().double()
    first, forward, draws = gen.config.num_train_timesteps - 1, gen.unet.forward, torch.Generator().manual_seed(seed)

    def erring(sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        out = forward(sample, timestep, *args, **kwargs)
        t = torch.as_tensor(timestep).cpu().long().reshape(-1, 1, 1, 1)  # one timestep, or one per row
        gain = ((1 - abar[t]) / abar[t]).sqrt()  # what an error in the noise costs in x0
        if not first_step:
            gain = torch.where(t == first, torch.zeros_like(gain), gain)
        delta = torch.randn(out.sample.shape, generator=draws, dtype=torch.float64)
        return type(out)(sample=out.sample - (gain * sigma * delta).to(out.sample))

    unet.forward = erring
    try:
        yield
    finally:
        del unet.forward  # the class's forward again


def noise_error_test(gen: Any, descriptions: Sequence[str], sigmas: Sequence[float] = (0.01, 0.1), *,
                     steps: int = 25, seed: int = 0) -> dict[str, list[bool]]:
    """Per arm, whether each image follows its description: ``"clean"`` and each arm of :data:`ARMS` at each sigma.

    Keys: ``"clean"`` and ``"<arm>, sigma <s>"``. Every arm draws the same
    descriptions from the same noise (``seed``), so any two pair image by image.
    """
    def right() -> list[bool]:
        images = gen.generate(list(descriptions), num_inference_steps=steps, seed=seed)
        return [r.all_correct for r in shapes_eval(images, list(descriptions)).records]

    results = {"clean": right()}
    for sigma in sigmas:
        for arm in ARMS:
            with noise_error(gen, sigma, first_step=arm == ARMS[0], seed=seed):
                results[f"{arm}, sigma {sigma:g}"] = right()
    return results
