"""ShapesWorld's vocabulary and scenes.

A scene holds one or more objects, each with a shape, a colour, a size and a position
on a 3×3 grid; no two objects share a cell, so objects never overlap. Some colour–shape
pairs (:data:`HELDOUT_PAIRS`) are held out of the ``train`` and ``val`` splits and appear
only in the ``heldout`` split, which makes a compositional test: combinations never seen
in training. :mod:`~llmimg.core.data.shapes_world` samples scenes; :mod:`.captions` and
:mod:`.render` write and draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "semicircle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 180, 60),
    "cyan": (40, 210, 220),
    "blue": (50, 80, 235),
    "purple": (150, 60, 210),
    "white": (240, 240, 240),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "position": POSITIONS,
}
# One pair per shape, each with a different colour: every shape and every colour is
# still seen in training, only these combinations are not.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"), ("orange", "circle"), ("yellow", "square"),
    ("green", "cross"), ("blue", "diamond"), ("purple", "semicircle"),
)
SPLITS: tuple[str, ...] = ("train", "val", "heldout")


def allowed_colours(shape: str, heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS) -> tuple[str, ...]:
    """The colours ``shape`` takes in the training distribution, in palette order."""
    return tuple(c for c in COLOUR_NAMES if (c, shape) not in heldout_pairs)


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: what it is (shape), how it looks (colour, size) and where it is."""

    position: str
    shape: str
    colour: str
    size: str

    def __post_init__(self) -> None:
        for name, values in ATTRIBUTES.items():
            value = getattr(self, name)
            if value not in values:
                raise ValueError(f"unknown {name} {value!r}; expected one of: {', '.join(values)}")

    @property
    def pair(self) -> tuple[str, str]:
        """The (colour, shape) combination, the unit of the compositional split."""
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """A set of non-overlapping objects, stored in reading order of their positions."""

    objects: tuple[ShapeObject, ...]

    def __post_init__(self) -> None:
        objects = tuple(sorted(self.objects, key=lambda o: POSITIONS.index(o.position)))
        if not objects:
            raise ValueError("a scene needs at least one object")
        positions = [o.position for o in objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two objects share a position in {positions}: objects may not overlap")
        object.__setattr__(self, "objects", objects)

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self) -> Iterator[ShapeObject]:
        return iter(self.objects)

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {o.pair for o in self.objects}
