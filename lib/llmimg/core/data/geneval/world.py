"""The GenEval-shaped ShapesWorld: prompts of GenEval's six categories (and the cell), each drawn with a layout.

Opt-in and separate: today's :class:`~llmimg.core.data.ShapesWorld` and its samples are
untouched (``tests/test_world_unchanged.py`` pins them). Scenes hold 1 to 4 objects on
the same 3×3 grid, drawn by the same renderer and described in the same words.

The generative process is prompt first: draw a category, draw a prompt of that category
(:meth:`GenEvalWorld.prompt`), then draw its layout with the oracle planner
(:func:`~llmimg.core.data.geneval.layout.plan_layout`). So the oracle is the exact
conditional distribution of layouts given a prompt, the target an LLM planner learns.

Compositional splits, after ShapeWorld (Kuhnle & Copestake, 2017, "ShapeWorld - a new
test methodology for multimodal language understanding"), which evaluates on
combinations held out of training:

* :data:`~llmimg.core.data.world.HELDOUT_PAIRS`, as today: these colour-shape pairs are in
  no ``train`` or ``val`` scene (nor prompt);
* :data:`HELDOUT_COUNTS`: no ``train``/``val`` counting prompt asks for these numbers of
  these shapes, and no other category puts two objects of one shape in a scene;
* :data:`HELDOUT_RELATIONS`: no ``train``/``val`` position prompt puts this shape in this
  relation to the other object, in either wording ("a circle above a square" and "a
  square below a circle" are one composition).

The ``heldout`` split draws every prompt of colors, color_attr and cell with a held-out
pair, of counting with a held-out count and of position with a held-out relation.
single_object and two_object prompts name only shapes, so there is nothing to hold out:
their ``heldout`` prompts follow the ``val`` distribution (on streams of their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from llmimg.core.data.captions import describe
from llmimg.core.data.geneval.grammar import (CATEGORIES, CONVERSE, RELATIONS, Group, PromptScene, Relation,
                                              format_geneval_prompt)
from llmimg.core.data.geneval.layout import plan_layout
from llmimg.core.data.render import render
from llmimg.core.data.world import HELDOUT_PAIRS, POSITIONS, SHAPES, SPLITS, Scene, allowed_colours
from llmimg.core.seeding import numpy_rng

# One (count, shape) per shape; each count loses two shapes.
HELDOUT_COUNTS: tuple[tuple[int, str], ...] = (
    (2, "square"), (2, "cross"), (3, "circle"), (3, "semicircle"), (4, "triangle"), (4, "diamond"),
)
# One (shape, relation) per shape: the shape is never in that relation to the other object in training.
HELDOUT_RELATIONS: tuple[tuple[str, str], ...] = (
    ("circle", "above"), ("square", "below"), ("triangle", "left of"),
    ("diamond", "right of"), ("cross", "above"), ("semicircle", "right of"),
)
COUNTS: tuple[int, ...] = (2, 3, 4)
STATE_COLOUR = 0.5  # how often a counting or cell prompt states the colour


def relation_is_heldout(subject: str, relation: str, object: str,
                        heldout: tuple[tuple[str, str], ...] = HELDOUT_RELATIONS) -> bool:
    """Whether "a ``subject`` ``relation`` a ``object``" is a held-out composition, in either wording."""
    return (subject, relation) in heldout or (object, CONVERSE[relation]) in heldout


@dataclass(frozen=True)
class GenEvalWorld:
    """The generator of the GenEval-shaped world's samples: same arguments, same samples, byte for byte.

    Sample ``index`` of ``split`` is a pure function of ``(seed, "geneval.<split>", index)``
    (:mod:`~llmimg.core.seeding`'s rule). ``category_weights`` weighs the categories of
    :data:`~llmimg.core.data.geneval.grammar.CATEGORIES` (default: uniform).
    """

    seed: int = 0
    image_size: int = 32
    heldout_pairs: tuple[tuple[str, str], ...] = field(default=HELDOUT_PAIRS)
    heldout_counts: tuple[tuple[int, str], ...] = field(default=HELDOUT_COUNTS)
    heldout_relations: tuple[tuple[str, str], ...] = field(default=HELDOUT_RELATIONS)
    category_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        w = self.category_weights
        if w is not None and (len(w) != len(CATEGORIES) or min(w) < 0 or sum(w) <= 0):
            raise ValueError(f"category_weights needs {len(CATEGORIES)} non-negative weights with a positive sum "
                             f"({', '.join(CATEGORIES)})")
        for count, shape in self.heldout_counts:
            if count not in COUNTS or shape not in SHAPES:
                raise ValueError(f"a held-out count is (2-4, shape), got {(count, shape)!r}")
        for shape, relation in self.heldout_relations:
            if relation not in RELATIONS or shape not in SHAPES:
                raise ValueError(f"a held-out relation is (shape, relation), got {(shape, relation)!r}")
        for shape in SHAPES:
            if not allowed_colours(shape, self.heldout_pairs):
                raise ValueError(f"heldout_pairs hold out every colour of {shape!r}")

    # -- streams --------------------------------------------------------------------
    def rng(self, split: str, index: int) -> np.random.Generator:
        """The random stream of sample ``index`` of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if index < 0:
            raise IndexError(f"index must be non-negative, got {index}")
        return numpy_rng(self.seed, f"geneval.{split}", index)

    # -- prompts --------------------------------------------------------------------
    def _colour(self, rng: np.random.Generator, shape: str, exclude: tuple[str, ...] = ()) -> str:
        colours = [c for c in allowed_colours(shape, self.heldout_pairs) if c not in exclude]
        return colours[int(rng.integers(len(colours)))]

    def _heldout_pair(self, rng: np.random.Generator) -> tuple[str, str]:
        if not self.heldout_pairs:
            raise ValueError("this world holds out no colour-shape pairs, so it has no heldout split")
        return self.heldout_pairs[int(rng.integers(len(self.heldout_pairs)))]

    def _two_shapes(self, rng: np.random.Generator) -> tuple[str, str]:
        a, b = rng.choice(len(SHAPES), size=2, replace=False)
        return SHAPES[int(a)], SHAPES[int(b)]

    def prompt(self, category: str, rng: np.random.Generator, split: str = "train") -> PromptScene:
        """A prompt of ``category`` for ``split``, drawn from ``rng`` (see the module's notes on held-out splits)."""
        held = split == "heldout"
        if category == "single_object":
            return PromptScene((Group(SHAPES[int(rng.integers(len(SHAPES)))]),))
        if category == "two_object":
            a, b = self._two_shapes(rng)
            return PromptScene((Group(a), Group(b)))
        if category == "counting":
            if held:
                if not self.heldout_counts:
                    raise ValueError("this world holds out no counts, so its heldout split has no counting prompts")
                count, shape = self.heldout_counts[int(rng.integers(len(self.heldout_counts)))]
            else:
                options = [(c, s) for c in COUNTS for s in SHAPES if (c, s) not in self.heldout_counts]
                count, shape = options[int(rng.integers(len(options)))]
            colour = self._colour(rng, shape) if rng.random() < STATE_COLOUR else None
            return PromptScene((Group(shape, count, colour),))
        if category == "colors":
            if held:
                colour, shape = self._heldout_pair(rng)
            else:
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                colour = self._colour(rng, shape)
            return PromptScene((Group(shape, colour=colour),))
        if category == "color_attr":
            a, b = self._two_shapes(rng)
            if held:  # one of the two objects (either) is a held-out pair
                colour, shape = self._heldout_pair(rng)
                other = [s for s in SHAPES if s != shape][int(rng.integers(len(SHAPES) - 1))]
                first, second = (Group(shape, colour=colour), Group(other, colour=self._colour(rng, other, (colour,))))
                return PromptScene((first, second) if rng.random() < 0.5 else (second, first))
            ca = self._colour(rng, a)
            return PromptScene((Group(a, colour=ca), Group(b, colour=self._colour(rng, b, (ca,)))))
        if category == "position":
            return self._position(rng, held)
        if category == "cell":
            if held:
                colour, shape = self._heldout_pair(rng)
            else:
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                colour = self._colour(rng, shape) if rng.random() < STATE_COLOUR else None
            return PromptScene((Group(shape, colour=colour, position=POSITIONS[int(rng.integers(len(POSITIONS)))]),))
        raise ValueError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")

    def _position(self, rng: np.random.Generator, held: bool) -> PromptScene:
        if held:
            if not self.heldout_relations:
                raise ValueError("this world holds out no relations, so its heldout split has no position prompts")
            shape, relation = self.heldout_relations[int(rng.integers(len(self.heldout_relations)))]
            other = [s for s in SHAPES if s != shape][int(rng.integers(len(SHAPES) - 1))]
            a, b = (shape, other) if rng.random() < 0.5 else (other, shape)
            if a != shape:
                relation = CONVERSE[relation]
        else:
            while True:  # rejection keeps the rest of the distribution uniform
                a, b = self._two_shapes(rng)
                relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
                if not relation_is_heldout(a, relation, b, self.heldout_relations):
                    break
        ca = self._colour(rng, a)
        cb = self._colour(rng, b)
        return PromptScene((Group(a, colour=ca), Group(b, colour=cb)), (Relation(0, relation, 1),))

    def category(self, rng: np.random.Generator) -> str:
        """A category drawn with ``category_weights``."""
        w = np.ones(len(CATEGORIES)) if self.category_weights is None else np.asarray(self.category_weights, float)
        k = int(np.searchsorted(np.cumsum(w / w.sum()), rng.random(), side="right"))
        return CATEGORIES[min(k, len(CATEGORIES) - 1)]

    # -- samples --------------------------------------------------------------------
    def sample(self, index: int, split: str = "train", category: str | None = None) -> GenEvalSample:
        """Sample ``index`` of ``split``: category, prompt, layout, image and description.

        With ``category`` given, the sample is of that category (the stream is the same,
        so the rest of the draw is the one the category's own samples would make).
        """
        rng = self.rng(split, index)
        drawn = self.category(rng)
        category = category or drawn
        prompt = self.prompt(category, rng, split)
        scene = plan_layout(prompt, rng, self.heldout_pairs)
        return GenEvalSample(index=index, split=split, category=category, prompt=format_geneval_prompt(prompt),
                             prompt_scene=prompt, scene=scene, image=render(scene, self.image_size),
                             description=describe(scene))

    def samples(self, n: int, split: str = "train", start: int = 0) -> Iterator[GenEvalSample]:
        """Samples ``start`` … ``start + n - 1`` of ``split``."""
        for index in range(start, start + n):
            yield self.sample(index, split)


@dataclass(frozen=True, eq=False)
class GenEvalSample:
    """One sample of the GenEval-shaped world: its category, the prompt typed, the layout drawn and described."""

    index: int
    split: str
    category: str
    prompt: str
    prompt_scene: PromptScene
    scene: Scene
    image: np.ndarray  # (H, W, 3) uint8
    description: str  # every object in reading order, as today's descriptions
