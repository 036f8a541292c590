"""ShapesWorld: the generative process that samples scenes, with their images and captions.

Every sample is a pure function of ``(seed, split, index)``: its random stream is
:func:`llmimg.core.seeding.numpy_rng` of ``(seed, "world.<split>", index)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from llmimg.core.data.captions import describe, sample_prompt
from llmimg.core.data.render import render
from llmimg.core.data.world import (COLOUR_NAMES, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES, SPLITS, Scene,
                                    ShapeObject, allowed_colours)
from llmimg.core.seeding import numpy_rng


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if index < 0:
        raise IndexError(f"index must be non-negative, got {index}")
    return numpy_rng(seed, f"world.{split}", index)


@dataclass(frozen=True)
class ShapesWorld:
    """The generator of ShapesWorld samples: same arguments, same samples, byte for byte.

    ``prompt_keep`` is the probability that a prompt states each optional attribute
    (colour, size, position) of an object; the shape is always stated.
    """

    seed: int = 0
    max_objects: int = 2
    image_size: int = 32
    prompt_keep: float = 0.5
    heldout_pairs: tuple[tuple[str, str], ...] = field(default=HELDOUT_PAIRS)

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= len(POSITIONS):
            raise ValueError(f"max_objects must be between 1 and {len(POSITIONS)}, got {self.max_objects}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if not 0.0 <= self.prompt_keep <= 1.0:
            raise ValueError(f"prompt_keep is a probability, got {self.prompt_keep}")
        for colour, shape in self.heldout_pairs:
            ShapeObject("center", shape, colour, "small")  # validates the names
        for shape in SHAPES:  # else training could never draw this shape
            if not self.allowed_colours(shape):
                raise ValueError(f"heldout_pairs hold out every colour of {shape!r}")

    # -- scenes ---------------------------------------------------------------------
    def scene(self, index: int, split: str = "train") -> Scene:
        """The scene number ``index`` of ``split``."""
        return self._scene(_rng(self.seed, split, index), split)

    def _scene(self, rng: np.random.Generator, split: str) -> Scene:
        if split == "heldout" and not self.heldout_pairs:
            raise ValueError("this world holds out no colour-shape pairs, so it has no heldout split")
        # One vector of uniforms per scene: drawing them in a single call keeps sampling
        # fast; rare rejections (held-out pairs) draw more.
        m = self.max_objects
        u = rng.random(2 + len(POSITIONS) + 3 * m)
        n = 1 + int(u[0] * m)
        positions = np.argsort(u[2:2 + len(POSITIONS)])[:n]
        attrs = (u[2 + len(POSITIONS):].reshape(m, 3) * (len(SHAPES), len(COLOUR_NAMES), len(SIZES))).astype(int)
        forced = int(u[1] * n) if split == "heldout" else -1
        heldout = set(self.heldout_pairs)
        objects = []
        for k in range(n):
            shape, colour = SHAPES[attrs[k, 0]], COLOUR_NAMES[attrs[k, 1]]
            if k == forced:  # the heldout split: at least one never-seen combination
                colour, shape = self.heldout_pairs[int(rng.integers(len(self.heldout_pairs)))]
            elif split != "heldout":
                while (colour, shape) in heldout:
                    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
            objects.append(ShapeObject(POSITIONS[positions[k]], shape, colour, SIZES[attrs[k, 2]]))
        return Scene(tuple(objects))

    # -- samples --------------------------------------------------------------------
    def sample(self, index: int, split: str = "train") -> Sample:
        """Scene, image, description and prompt number ``index`` of ``split``."""
        rng = _rng(self.seed, split, index)
        scene = self._scene(rng, split)
        return Sample(
            index=index,
            split=split,
            scene=scene,
            image=render(scene, self.image_size),
            description=describe(scene),
            prompt=sample_prompt(scene, rng, keep=self.prompt_keep),
        )

    def samples(self, n: int, split: str = "train", start: int = 0) -> Iterator[Sample]:
        """Samples ``start`` … ``start + n - 1`` of ``split``."""
        for index in range(start, start + n):
            yield self.sample(index, split)

    def allowed_colours(self, shape: str) -> tuple[str, ...]:
        """The colours a ``shape`` takes in the training distribution."""
        return allowed_colours(shape, self.heldout_pairs)


@dataclass(frozen=True, eq=False)
class Sample:
    """One ShapesWorld example: the scene, its RGB image and its two captions."""

    index: int
    split: str
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    description: str
    prompt: str
