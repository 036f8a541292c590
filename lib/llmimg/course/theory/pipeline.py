"""The pipeline as a composition of conditional distributions, on a tiny discrete toy.

prompt t ──M_CV──> z ──M_LLM──> description d ──M_IG──> image I

* the CLIP text encoder is deterministic: P(z | t) puts all mass on ``z = E[t]``;
* the language model is a distribution over descriptions, P(d | z) = softmax(W z + b);
* the image generator is a distribution over images, P(I | d) (a row-stochastic table).

The marginal P(I | t) = Σ_d P(d | z(t)) P(I | d) is computed exactly by enumeration and
can be checked against sampling through the three stages one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PipelineToy:
    """A discrete three-stage pipeline: encoder table, softmax "LLM", generator table.

    ``embeddings[t]`` is z for prompt t; ``llm_weights`` (D × dim z) and ``llm_bias`` (D)
    give P(d | z) = softmax(W z + b); ``image_given_description[d, i]`` is P(I = i | d).
    """

    prompts: tuple[str, ...]
    descriptions: tuple[str, ...]
    images: tuple[str, ...]
    embeddings: np.ndarray
    llm_weights: np.ndarray
    llm_bias: np.ndarray
    image_given_description: np.ndarray

    def encode(self, prompt: int) -> np.ndarray:
        """M_CV: the (deterministic) embedding z of prompt index ``prompt``."""
        return self.embeddings[prompt]

    def description_probs(self, z: np.ndarray) -> np.ndarray:
        """M_LLM: the distribution P(d | z) over descriptions."""
        logits = self.llm_weights @ np.asarray(z, dtype=float) + self.llm_bias
        logits = logits - logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def image_probs(self, description: int) -> np.ndarray:
        """M_IG: the distribution P(I | d) over images."""
        return self.image_given_description[description]


def pipeline_toy() -> PipelineToy:
    """The toy of notebook 01: 3 prompts, 4 descriptions, 3 images (fixed numbers)."""
    return PipelineToy(
        prompts=("a shape", "a red shape", "a red circle"),
        descriptions=(
            "a large red circle in the center",
            "a small red circle in the top left",
            "a large red square in the center",
            "a small blue square in the bottom right",
        ),
        images=("red circle", "red square", "blue square"),
        embeddings=np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]),
        llm_weights=np.array([[1.0, 1.5], [1.0, 1.0], [1.0, -1.0], [-1.5, -1.0]]),
        llm_bias=np.array([0.0, -0.5, 0.0, 0.5]),
        image_given_description=np.array(
            [
                [0.90, 0.08, 0.02],
                [0.80, 0.15, 0.05],
                [0.10, 0.85, 0.05],
                [0.02, 0.08, 0.90],
            ]
        ),
    )


def description_given_prompt(toy: PipelineToy) -> np.ndarray:
    """P(d | t) for every prompt (rows) and description (columns): z is deterministic."""
    return np.stack([toy.description_probs(toy.encode(t)) for t in range(len(toy.prompts))])


def image_given_prompt(toy: PipelineToy) -> np.ndarray:
    """The marginal P(I | t) = Σ_d P(d | z(t)) P(I | d), by enumeration (prompts × images)."""
    return description_given_prompt(toy) @ toy.image_given_description


def sample_pipeline(toy: PipelineToy, prompt: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` images for one prompt by running the stages in turn (z, then d, then I).

    Returns the image indices; their histogram estimates P(I | t) by Monte Carlo.
    """
    z = toy.encode(prompt)
    p_d = toy.description_probs(z)
    d = rng.choice(len(p_d), size=n, p=p_d)
    # one categorical draw per sample from its own row P(I | d): inverse-CDF sampling
    cdf = np.cumsum(toy.image_given_description[d], axis=1)
    u = rng.random(n)[:, None]
    return np.minimum((u > cdf).sum(axis=1), len(toy.images) - 1)
