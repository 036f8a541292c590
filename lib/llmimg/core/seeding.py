"""The one seeding rule: every random stream of the library is derived from ``(seed, purpose, index)``.

A *purpose* names what a stream is for (the scenes of a split, a training batch, the
initial noise of an image, the LLM's sampling of a description ...); :data:`PURPOSES`
lists them all, each with a fixed code. The stream is NumPy's ``SeedSequence([seed,
code, index])``, handed out as a NumPy generator, a ``torch.Generator`` or a plain
integer seed. Two consequences the course relies on:

* streams never overlap by accident: image 3's noise does not depend on how many
  images were drawn before it, nor on the batch it was drawn in;
* **no library call touches the global random state** (``torch.manual_seed``,
  ``np.random.seed``). Code that can only draw from torch's global generator (module
  initialisation, dropout, transformers' sampling) runs inside :func:`isolated`, which
  seeds it from the rule and gives the caller's state back afterwards.

Notebook code that calls torch or NumPy directly may still seed them globally with
:func:`seed_everything`.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# purpose -> code. Codes are part of every stream's identity: never reuse or renumber one.
# The world's splits keep codes 0-2, so ShapesWorld's samples are the ones the course always had.
PURPOSES: dict[str, int] = {
    "world.train": 0,  # scene, image and prompt number `index` of a split
    "world.val": 1,
    "world.heldout": 2,
    "init": 3,  # a model's initial weights (index: which model, when several start together)
    "train": 4,  # dropout and other draws from torch's generator inside fit()
    "batch": 5,  # the examples, noise and timesteps of training batch `index`
    "noise": 6,  # the initial noise of image `index`
    "describe": 7,  # the LLM's sampling of description draw `index` (redraws of the checker count up)
    "prompt": 8,  # the seed of prompt `index` of a list, from the list's seed
    "bank": 9,  # one-off draws while building a training bank (e.g. CLIP's hard negatives)
    "eval": 10,  # draws an evaluation makes (e.g. the oracle upsampler it compares with)
    "reward": 11,  # the rollouts of reinforcement-learning step `index`
    "tasks": 12,  # which rows of joint-training batch `index` caption and which upsample
    "geneval.train": 13,  # sample number `index` of a split of the opt-in GenEval-shaped world (issue 26)
    "geneval.val": 14,
    "geneval.heldout": 15,
    "protocol": 16,  # prompt `index` of the evaluation protocol's committed prompt sets
    "bootstrap": 17,  # the resamples behind a statistic's bootstrap standard error
}


def _code(purpose: str) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    return PURPOSES[purpose]


def _check_seed(seed: int, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{what} must be a non-negative whole number, got {seed!r}")
    return int(seed)


def seed_sequence(seed: int, purpose: str, index: int = 0) -> np.random.SeedSequence:
    """The stream of ``purpose`` number ``index`` under ``seed``: the rule itself."""
    return np.random.SeedSequence([_check_seed(seed), _code(purpose), _check_seed(index, "index")])


def numpy_rng(seed: int, purpose: str, index: int = 0) -> np.random.Generator:
    """A NumPy generator on the stream ``(seed, purpose, index)``."""
    return np.random.default_rng(seed_sequence(seed, purpose, index))


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit integer seed taken from the stream ``(seed, purpose, index)`` (torch takes it as is)."""
    high, low = seed_sequence(seed, purpose, index).generate_state(2, dtype=np.uint32)
    return (int(high) << 32 | int(low)) & (2**63 - 1)


def torch_generator(seed: int, purpose: str, index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on the stream ``(seed, purpose, index)``."""
    import torch

    return torch.Generator(device=device).manual_seed(derive_seed(seed, purpose, index))


def noise_generators(seed: int, n: int, start: int = 0) -> list[torch.Generator]:
    """One noise stream per image: image ``k`` gets ``(seed, "noise", start + k)``, whatever batch it is in."""
    return [torch_generator(seed, "noise", start + k) for k in range(n)]


def fresh_seed() -> int:
    """A seed from the operating system's entropy, for a call that was given none (never the global state)."""
    return secrets.randbits(63)


def peek_seed(generator: torch.Generator) -> int:
    """A seed drawn from a copy of ``generator``, which is left as it was.

    The pipelines seed the LLM this way, so that the noise drawn next from ``generator``
    is the same with the LLM on or off.
    """
    import torch

    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return int(torch.randint(2**62, (1,), generator=copy, device=generator.device))


def peek_seeds(generator: torch.Generator | list[torch.Generator], n: int) -> list[int]:
    """One seed for each of ``n`` prompts, read from the call's generator(s) without advancing them.

    A list (one generator per prompt, as in diffusers) gives each prompt its own
    generator's :func:`peek_seed`; one generator for the batch gives prompt k the stream
    ``(peek_seed(generator), "prompt", k)``.
    """
    if isinstance(generator, list):
        return [peek_seed(g) for g in generator]
    first = peek_seed(generator)
    return [derive_seed(first, "prompt", k) for k in range(n)]


@contextmanager
def isolated(seed: int, purpose: str, index: int = 0) -> Iterator[None]:
    """Seed torch's global generators from the rule for the block, then give the caller's state back.

    For the draws only the global generator makes: initial weights, dropout, and
    transformers' own sampling.
    """
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, purpose, index))
        yield


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch globally (for notebook code) and return a NumPy generator.

    The library never relies on this: it derives its own streams. Notebook cells that
    call ``torch.randn`` or ``np.random`` directly use it to repeat exactly.
    """
    import torch

    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


__all__ = ["PURPOSES", "derive_seed", "fresh_seed", "isolated", "noise_generators", "numpy_rng", "peek_seed",
           "peek_seeds", "seed_everything", "seed_sequence", "torch_generator"]
