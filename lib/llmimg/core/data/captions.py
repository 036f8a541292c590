"""ShapesWorld's two caption levels, and the parser that reads them back.

* A **description** states every attribute of every object, in reading order:
  ``"a large red circle in the top left and a small blue square in the center"``.
* A **prompt** is what a person would type: every object's shape, and each of its
  colour, size and position only sometimes, in any order: ``"a red circle and a square"``.

Both follow one grammar, so one parser reads both::

    caption := phrase (" and " phrase)*
    phrase  := ("a" | "an") [size] [colour] shape ["in the" position]

:func:`parse_description` insists on every attribute and returns the exact
:class:`~llmimg.core.data.world.Scene`; later notebooks use it to score what the language
model writes. :func:`complete_prompt` is the *oracle upsampler*: it samples a full scene
from the data's own conditional distribution given a prompt, the target the LLM learns.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from llmimg.core.data.world import (COLOUR_NAMES, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject,
                               allowed_colours)


class ParseError(ValueError):
    """A caption that does not follow ShapesWorld's grammar; the message says where and why."""


@dataclass(frozen=True)
class PartialObject:
    """An object as a prompt states it: the shape, and whichever other attributes were typed."""

    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    def matches(self, obj: ShapeObject) -> bool:
        """Whether every attribute stated here is true of ``obj``."""
        return all(
            getattr(self, name) in (None, getattr(obj, name))
            for name in ("shape", "colour", "size", "position")
        )

    @property
    def n_stated(self) -> int:
        return 1 + sum(x is not None for x in (self.colour, self.size, self.position))


def article(word: str) -> str:
    """The article before ``word``: "an" before a vowel ("an orange circle"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _phrase(obj: ShapeObject | PartialObject) -> str:
    words = [w for w in (obj.size, obj.colour, obj.shape) if w is not None]
    text = f"{article(words[0])} {' '.join(words)}"
    return f"{text} in the {obj.position}" if obj.position is not None else text


def describe(scene: Scene) -> str:
    """The full description of ``scene``: every attribute of every object, in reading order."""
    return " and ".join(_phrase(obj) for obj in scene)


def describe_in_prompt_order(scene: Scene, prompt: str | tuple[PartialObject, ...]) -> str:
    """The full description of ``scene`` with its objects in the order ``prompt`` names them.

    What the upsampler learns to write: copying the prompt's objects in their own order
    is a left-to-right copy, where reading order would make the model first decide which
    object comes first and bind every attribute to it. :func:`reading_order` puts the
    result back in reading order. Raises :class:`ParseError` if ``prompt`` does not match ``scene``.
    """
    partials = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    objects = _in_prompt_order(partials, scene)
    if objects is None:
        raise ParseError(f"the prompt {format_prompt(partials)!r} does not match the scene {describe(scene)!r}")
    return " and ".join(_phrase(obj) for obj in objects)


def reading_order(description: str) -> str:
    """A full description rewritten with its objects in reading order; raises :class:`ParseError`."""
    return describe(parse_description(description))


def sample_prompt(scene: Scene, rng: np.random.Generator, keep: float = 0.5) -> str:
    """A prompt for ``scene``: each object's shape, each other attribute kept with probability ``keep``."""
    u = rng.random(4 * len(scene))
    kept = u[: 3 * len(scene)].reshape(-1, 3) < keep
    order = np.argsort(u[3 * len(scene):])
    partials = []
    for k in order:
        obj = scene.objects[k]
        size, colour, position = (v if keep_it else None
                                  for v, keep_it in zip((obj.size, obj.colour, obj.position), kept[k]))
        partials.append(PartialObject(obj.shape, colour, size, position))
    return format_prompt(partials)


def format_prompt(objects: list[PartialObject] | tuple[PartialObject, ...]) -> str:
    """Write partial objects as a prompt, in the given order."""
    return " and ".join(_phrase(obj) for obj in objects)


_POSITION_WORDS = {p: p.split() for p in POSITIONS}


def _parse_phrase(words: list[str], number: int) -> PartialObject:
    where = f"object {number}"
    if not words or words[0] not in ("a", "an"):
        got = f"{words[0]!r}" if words else "nothing"
        raise ParseError(f"{where}: expected it to start with 'a' or 'an', got {got}")
    i = 1
    size = colour = None
    if i < len(words) and words[i] in SIZES:
        size, i = words[i], i + 1
    if i < len(words) and words[i] in COLOUR_NAMES:
        colour, i = words[i], i + 1
    if i >= len(words):
        raise ParseError(f"{where}: missing the shape (one of {', '.join(SHAPES)})")
    if words[i] not in SHAPES:
        raise ParseError(f"{where}: unknown word {words[i]!r} where a size, colour or shape "
                         f"belongs (shapes: {', '.join(SHAPES)})")
    shape, i = words[i], i + 1
    position = None
    if i < len(words):
        if words[i:i + 2] != ["in", "the"]:
            raise ParseError(f"{where}: unexpected {' '.join(words[i:])!r} after the shape "
                             "(a position starts with 'in the')")
        rest = words[i + 2:]
        position = next((p for p, pw in _POSITION_WORDS.items() if rest == pw), None)
        if position is None:
            raise ParseError(f"{where}: unknown position {' '.join(rest)!r} "
                             f"(positions: {', '.join(POSITIONS)})")
    return PartialObject(shape, colour, size, position)


def parse_prompt(text: str) -> tuple[PartialObject, ...]:
    """Read a prompt (or description) into the objects it states; raises :class:`ParseError`."""
    if not isinstance(text, str):
        raise ParseError(f"a caption must be a string, got {type(text).__name__}")
    clean = re.sub(r"\s+", " ", text.strip().lower().rstrip("."))
    if not clean:
        raise ParseError("the caption is empty")
    phrases = clean.split(" and ")
    return tuple(_parse_phrase(p.split(" "), n) for n, p in enumerate(phrases, start=1))


def read_prompt(words: list[str]) -> tuple[PartialObject, ...]:
    """Read typed words (lower case, punctuation gone) into the objects they state, more leniently than the grammar.

    What people type is close to the grammar but not in it: "red circle top left", "a
    circle and the blue square", "a red circle a blue square". Here an article may be
    missing or "the"; a position may come without "in the" (or without "the"); phrases
    may follow each other without "and". :func:`format_prompt` writes the result in the
    grammar, where :func:`parse_prompt` reads it back; a prompt of the grammar comes
    back unchanged. Anything else (no shape, a word out of place, an unknown position,
    two objects in one cell) raises :class:`ParseError` saying what and where.
    """
    objects: list[PartialObject] = []
    i, n = 0, len(words)

    def position_at(j: int) -> tuple[str, int] | None:
        for name, pw in _POSITION_WORDS.items():
            if words[j:j + len(pw)] == pw:
                return name, j + len(pw)
        return None

    while i < n:
        if words[i] == "and":
            if not objects or i + 1 == n:
                raise ParseError(f"'and' {'before the first object' if not objects else 'at the end'}: "
                                 "it joins two objects")
            i += 1
        start = i
        if words[i] in ("a", "an", "the"):
            i += 1
        size = colour = None
        if i < n and words[i] in SIZES:
            size, i = words[i], i + 1
        if i < n and words[i] in COLOUR_NAMES:
            colour, i = words[i], i + 1
        if i >= n or words[i] not in SHAPES:
            said = " ".join(words[start:i + 1]) or "nothing"
            what = ("it names no shape" if i >= n else
                    f"{words[i]!r} is out of place" if words[i] in (*SIZES, *COLOUR_NAMES) else
                    f"{words[i]!r} stands where its shape should")
            raise ParseError(f"object {len(objects) + 1} ({said!r}): {what}; an object reads [size] [colour] shape "
                             f"[in the position], the shapes are {', '.join(SHAPES)}")
        shape, i = words[i], i + 1
        position = None
        if i < n and words[i] == "in":
            j = i + 1 + (i + 1 < n and words[i + 1] == "the")
            found = position_at(j)
            if found is None:
                raise ParseError(f"object {len(objects) + 1} ({shape}): unknown position "
                                 f"{' '.join(words[j:j + 2]) or 'nothing'!r} after {' '.join(words[i:j])!r}; "
                                 f"the positions are {', '.join(POSITIONS)}")
            position, i = found
        elif i < n and (found := position_at(i + (words[i] == "the"))) is not None:
            position, i = found
        if position is not None and position in [o.position for o in objects]:
            raise ParseError(f"two objects are in the {position}: each of the 9 cells holds one object")
        objects.append(PartialObject(shape, colour, size, position))
        if i < n and words[i] not in ("and", "a", "an", "the", *SIZES, *COLOUR_NAMES, *SHAPES):
            raise ParseError(f"object {len(objects)} ({shape}): {' '.join(words[i:i + 3])!r} cannot follow it; "
                             f"a position reads 'in the top left' (positions: {', '.join(POSITIONS)})")
    if not objects:
        raise ParseError("the prompt names no object")
    if len(objects) > len(POSITIONS):
        raise ParseError(f"the prompt names {len(objects)} objects; a scene holds at most {len(POSITIONS)}")
    return tuple(objects)


def parse_description(text: str) -> Scene:
    """Read a full description back into its exact scene; raises :class:`ParseError`.

    Every object must state its size, colour and position, and no two objects may share
    a position. The objects may come in any order.
    """
    objects = []
    for n, partial in enumerate(parse_prompt(text), start=1):
        missing = [a for a in ("size", "colour", "position") if getattr(partial, a) is None]
        if missing:
            raise ParseError(f"object {n} ({partial.shape}) does not state its {' and '.join(missing)}")
        objects.append(ShapeObject(partial.position, partial.shape, partial.colour, partial.size))
    try:
        return Scene(tuple(objects))
    except ValueError as err:
        raise ParseError(str(err)) from None


def prompt_matches(prompt: str | tuple[PartialObject, ...], scene: Scene) -> bool:
    """Whether ``scene`` has exactly the prompt's objects, each with every attribute the prompt states."""
    partials = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    return _in_prompt_order(partials, scene) is not None


def _in_prompt_order(partials: tuple[PartialObject, ...], scene: Scene) -> tuple[ShapeObject, ...] | None:
    """The scene's objects matched one to one with the prompt's, in the prompt's order; None if none match."""
    if len(partials) != len(scene):
        return None
    return next((perm for perm in itertools.permutations(scene.objects)
                 if all(p.matches(o) for p, o in zip(partials, perm))), None)


def faithful(prompt: str | tuple[PartialObject, ...], description: str) -> bool:
    """Whether ``description`` parses as a full description and keeps everything ``prompt`` states."""
    try:
        return prompt_matches(prompt, parse_description(description))
    except ParseError:
        return False


def complete_prompt(prompt: str | tuple[PartialObject, ...], rng: np.random.Generator,
                    heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS) -> Scene:
    """The oracle upsampler: a full scene drawn from the data's distribution given the prompt.

    Open attributes are sampled exactly as the generative process would, conditioned on
    the stated ones: sizes uniformly, colours uniformly among those the shape takes in
    training, free positions uniformly among the cells left. Stated attributes are kept,
    held-out combinations included.
    """
    partials = parse_prompt(prompt) if isinstance(prompt, str) else tuple(prompt)
    taken = [p.position for p in partials if p.position is not None]
    if len(set(taken)) != len(taken):
        raise ParseError(f"the prompt puts two objects at the same position: {taken}")
    free = [p for p in POSITIONS if p not in taken]
    if len(free) < sum(p.position is None for p in partials):
        raise ParseError("the prompt has more objects than there are free positions")
    free_order = list(rng.permutation(free))
    objects = []
    for p in partials:
        colours = allowed_colours(p.shape, heldout_pairs)
        colour = p.colour or colours[int(rng.integers(len(colours)))]
        size = p.size or SIZES[int(rng.integers(len(SIZES)))]
        position = p.position or str(free_order.pop())
        objects.append(ShapeObject(position, p.shape, colour, size))
    return Scene(tuple(objects))
