"""The GenEval-shaped world's prompt language: counts, relations and cells beside today's phrases.

A prompt names *groups* of objects, and may relate two of them::

    prompt   := clause (" and " clause)*
    clause   := group [relation group]
    group    := ("a" | "an") [size] [colour] shape ["in the" cell]     one object
              | number [size] [colour] plural                          2-4 objects of one kind
    relation := "to the left of" | "to the right of" | "above" | "below"
    number   := "two" | "three" | "four"

"a red circle to the left of a blue square", "three red circles", "a triangle and a
cross", "a circle in the top left". Every prompt of today's world is a prompt of this
language with the same meaning. Descriptions do not change: a full description is
today's (:func:`~llmimg.core.data.describe`), one phrase per object with every attribute
and its cell, now of up to :data:`MAX_OBJECTS` objects.

Each prompt falls in one of GenEval's six categories (Ghosh et al., 2023, "GenEval: an
object-focused framework for evaluating text-to-image alignment"), or in the seventh,
today's absolute cell, reported beside them: :func:`prompt_category`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmimg.core.data.captions import ParseError, article
from llmimg.core.data.world import COLOUR_NAMES, POSITIONS, SHAPES, SIZES, ShapeObject

MAX_OBJECTS = 4  # a scene of this world holds 1 to 4 objects
NUMBERS: dict[str, int] = {"two": 2, "three": 3, "four": 4}
NUMBER_WORDS: dict[int, str] = {n: w for w, n in NUMBERS.items()}
PLURALS: dict[str, str] = {s: s + ("es" if s.endswith(("s", "x", "ss")) else "s") for s in SHAPES}
SINGULARS: dict[str, str] = {p: s for s, p in PLURALS.items()}
# The four relations GenEval's position category names, and how a prompt says each.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
RELATION_PHRASES: dict[str, str] = {"left of": "to the left of", "right of": "to the right of",
                                    "above": "above", "below": "below"}
CONVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# GenEval's six categories under GenEval's own tags; "overall" is their mean.
GENEVAL_CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CELL_CATEGORY = "cell"  # today's absolute cell ("a red circle in the top left"), reported beside the six
CATEGORIES: tuple[str, ...] = (*GENEVAL_CATEGORIES, CELL_CATEGORY)


@dataclass(frozen=True)
class Group:
    """Objects a prompt names together: one ("a red circle") or ``count`` of one kind ("three red circles").

    Every attribute but the shape may be left open (None); a stated one holds for every
    object of the group. Only a single object may have a cell.
    """

    shape: str
    count: int = 1
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        for name, values in (("shape", SHAPES), ("colour", COLOUR_NAMES), ("size", SIZES), ("position", POSITIONS)):
            value = getattr(self, name)
            if value is not None and value not in values or name == "shape" and value is None:
                raise ValueError(f"unknown {name} {value!r}; expected one of: {', '.join(values)}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= MAX_OBJECTS:
            raise ValueError(f"a group holds 1 to {MAX_OBJECTS} objects, got count {self.count!r}")
        if self.position is not None and self.count > 1:
            raise ValueError("only a single object can be given a cell; a counted group is placed freely")

    def matches(self, obj: ShapeObject) -> bool:
        """Whether every attribute stated here is true of ``obj``."""
        return all(getattr(self, a) in (None, getattr(obj, a)) for a in ("shape", "colour", "size", "position"))

    def stated(self) -> dict[str, str]:
        """The attributes this group states, shape first."""
        return {a: getattr(self, a) for a in ("shape", "colour", "size", "position") if getattr(self, a) is not None}


@dataclass(frozen=True)
class Relation:
    """``subject`` (a group's index) stands in ``relation`` to ``object``: "the circle is to the left of the square"."""

    subject: int
    relation: str
    object: int

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}; expected one of: {', '.join(RELATIONS)}")
        if self.subject == self.object:
            raise ValueError("a relation needs two different groups")


@dataclass(frozen=True)
class PromptScene:
    """What a prompt asks for: its groups, in the order it names them, and the relations between them."""

    groups: tuple[Group, ...]
    relations: tuple[Relation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "relations", tuple(self.relations))
        if not self.groups:
            raise ValueError("a prompt names at least one object")
        if self.n_objects > MAX_OBJECTS:
            raise ValueError(f"the prompt names {self.n_objects} objects; a scene of this world holds at most "
                             f"{MAX_OBJECTS}")
        cells = [g.position for g in self.groups if g.position is not None]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects are in the same cell {cells}: each cell holds one object")
        for r in self.relations:
            if not (0 <= r.subject < len(self.groups) and 0 <= r.object < len(self.groups)):
                raise ValueError(f"the relation {r} names a group the prompt does not have")

    @property
    def n_objects(self) -> int:
        """How many objects the prompt asks for: the layout must hold exactly these."""
        return sum(g.count for g in self.groups)

    @property
    def slots(self) -> tuple[int, ...]:
        """The group of each object the prompt asks for, in order: (0, 1, 1, 1) for 'a cross and three circles'."""
        return tuple(k for k, g in enumerate(self.groups) for _ in range(g.count))


# -- writing ------------------------------------------------------------------------
def _group_text(group: Group) -> str:
    if group.count > 1:
        words = [w for w in (group.size, group.colour) if w is not None]
        return " ".join([NUMBER_WORDS[group.count], *words, PLURALS[group.shape]])
    words = [w for w in (group.size, group.colour, group.shape) if w is not None]
    text = f"{article(words[0])} {' '.join(words)}"
    return f"{text} in the {group.position}" if group.position is not None else text


def format_geneval_prompt(prompt: PromptScene) -> str:
    """The prompt as text; :func:`parse_geneval_prompt` reads it back to the same :class:`PromptScene`.

    A relation is written as one clause of its two groups, so it must relate a group to
    the next one (as every parsed prompt does).
    """
    linked = {r.subject: r for r in prompt.relations}
    if any(r.object != r.subject + 1 for r in prompt.relations) or len(linked) != len(prompt.relations):
        raise ValueError("a relation can only be written between a group and the next one, once")
    clauses, k = [], 0
    while k < len(prompt.groups):
        if k in linked:
            rel = linked[k]
            clauses.append(f"{_group_text(prompt.groups[k])} {RELATION_PHRASES[rel.relation]} "
                           f"{_group_text(prompt.groups[k + 1])}")
            k += 2
        else:
            clauses.append(_group_text(prompt.groups[k]))
            k += 1
    return " and ".join(clauses)


# -- reading ------------------------------------------------------------------------
_POSITION_WORDS = {p: p.split() for p in POSITIONS}
_RELATION_WORDS = {r: phrase.split() for r, phrase in RELATION_PHRASES.items()}


def _read_group(words: list[str], i: int, number: int) -> tuple[Group, int]:
    """The group that starts at ``words[i]`` and the index after it."""
    where = f"object {number}"
    if i >= len(words):
        raise ParseError(f"{where}: expected an object ('a ...' or a number), got nothing")
    first = words[i]
    if first not in ("a", "an", *NUMBERS):
        raise ParseError(f"{where}: expected 'a', 'an' or a number ({', '.join(NUMBERS)}), got {first!r}")
    count, i = NUMBERS.get(first, 1), i + 1
    size = colour = None
    if i < len(words) and words[i] in SIZES:
        size, i = words[i], i + 1
    if i < len(words) and words[i] in COLOUR_NAMES:
        colour, i = words[i], i + 1
    if i >= len(words):
        raise ParseError(f"{where}: missing the shape (one of {', '.join(SHAPES)})")
    word = words[i]
    if count == 1 and word in SINGULARS:
        raise ParseError(f"{where}: 'a' names one object, so {word!r} should be {SINGULARS[word]!r}")
    if count > 1 and word in SHAPES:
        raise ParseError(f"{where}: {first!r} objects take the plural, {PLURALS[word]!r}, not {word!r}")
    shape = word if count == 1 else SINGULARS.get(word)
    if shape not in SHAPES:
        raise ParseError(f"{where}: unknown word {word!r} where a size, colour or shape belongs "
                         f"(shapes: {', '.join(SHAPES)})")
    i += 1
    position = None
    if words[i:i + 1] == ["at"]:
        raise ParseError(f"{where}: a cell reads 'in the {POSITIONS[0]}', not {' '.join(words[i:i + 4])!r}")
    if words[i:i + 2] == ["in", "the"]:
        if count > 1:
            raise ParseError(f"{where}: {first} {PLURALS[shape]} cannot share one cell; only a single object "
                             "is given a cell")
        rest = words[i + 2:]
        position = next((p for p, pw in _POSITION_WORDS.items() if rest[:len(pw)] == pw), None)
        if position is None:
            raise ParseError(f"{where}: unknown position {' '.join(rest[:2])!r} (positions: {', '.join(POSITIONS)})")
        i += 2 + len(_POSITION_WORDS[position])
    return Group(shape, count, colour, size, position), i


def _read_relation(words: list[str], i: int) -> tuple[str | None, int]:
    for relation, rw in _RELATION_WORDS.items():
        if words[i:i + len(rw)] == rw:
            return relation, i + len(rw)
    return None, i


def parse_geneval_prompt(text: str) -> PromptScene:
    """Read a prompt of this world (:mod:`this grammar <.grammar>`) into a :class:`PromptScene`; raises ParseError."""
    if not isinstance(text, str):
        raise ParseError(f"a prompt must be a string, got {type(text).__name__}")
    words = re.sub(r"\s+", " ", text.strip().lower().rstrip(".")).split()
    if not words:
        raise ParseError("the prompt is empty")
    groups: list[Group] = []
    relations: list[Relation] = []
    i = 0
    while True:
        group, i = _read_group(words, i, len(groups) + 1)
        groups.append(group)
        relation, j = _read_relation(words, i)
        if relation is not None:
            if groups[-1].position is not None:
                raise ParseError(f"object {len(groups)}: a cell and a relation in one clause; give one or the other")
            other, i = _read_group(words, j, len(groups) + 1)
            if other.position is not None:
                raise ParseError(f"object {len(groups) + 1}: a cell and a relation in one clause; "
                                 "give one or the other")
            relations.append(Relation(len(groups) - 1, relation, len(groups)))
            groups.append(other)
        if i == len(words):
            break
        if words[i] != "and" or i + 1 == len(words):
            raise ParseError(f"object {len(groups)}: unexpected {' '.join(words[i:i + 4])!r} after it "
                             "(objects are joined by 'and'; a relation reads 'to the left of', 'above', ...)")
        i += 1
    try:
        return PromptScene(tuple(groups), tuple(relations))
    except ValueError as err:
        raise ParseError(str(err)) from None


def prompt_category(prompt: PromptScene | str) -> str | None:
    """The category of a prompt, by its form; None when it is in none of them (e.g. three groups).

    position: two single objects and a relation between them; counting: one group of 2-4;
    cell: one object given its cell; colors: one object with its colour; single_object: one
    object, shape only; color_attr: two objects, each with its colour; two_object: two
    objects, shapes only. Sizes are not part of any category's prompts.
    """
    p = parse_geneval_prompt(prompt) if isinstance(prompt, str) else prompt
    groups = p.groups
    if any(g.size is not None for g in groups):
        return None
    single = all(g.count == 1 for g in groups)
    cells = [g.position is not None for g in groups]
    coloured = [g.colour is not None for g in groups]
    if p.relations:
        ok = len(groups) == 2 and single and not any(cells)
        return "position" if ok else None
    if len(groups) == 1:
        g = groups[0]
        if g.count > 1:
            return "counting"
        if g.position is not None:
            return CELL_CATEGORY
        return "colors" if g.colour is not None else "single_object"
    if len(groups) == 2 and single and not any(cells):
        if all(coloured):
            return "color_attr"
        if not any(coloured):
            return "two_object"
    return None
