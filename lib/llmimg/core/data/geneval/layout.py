"""Layouts: where a prompt's objects may go, the checker that says which constraints a layout breaks, and the oracle.

A *layout* is a full :class:`~llmimg.core.data.world.Scene`: every object with its shape,
colour, size and cell, no two in one cell. It is consistent with a prompt when it holds
exactly the prompt's objects, each with what the prompt states, and every relation holds.

**Relations on the grid.** GenEval (Ghosh et al., 2023) calls object A "left of" B when the
offset between their centres points left within 60° of the horizontal (its normalised
horizontal component is below -0.5), and likewise for right of, above and below. On the
3×3 grid this reads, with (dr, dc) the offset of A's cell from B's in rows and columns:
"left of" when dc < 0 and 3·dc² > dr². So a diagonal neighbour is both left of and above,
and an offset of one column and two rows is above (or below) but neither left nor right.
GenEval's margin for the objects' extent changes none of these calls on this grid.

* :func:`relation_holds` is that rule;
* :func:`check_layout` is the LLM planner's checker: which constraints a layout breaks;
* :func:`plan_layout` is the oracle planner: a layout drawn from the data's own distribution
  given the prompt (open colours among those the shape takes in training, sizes uniformly,
  cells uniformly among the placements that satisfy the prompt); the GenEval-shaped world
  draws every scene this way, so the oracle is its exact conditional.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from llmimg.core.data.captions import ParseError, parse_description
from llmimg.core.data.geneval.grammar import (RELATION_PHRASES, Group, PromptScene, _group_text,
                                              parse_geneval_prompt)
from llmimg.core.data.world import HELDOUT_PAIRS, POSITIONS, SIZES, Scene, ShapeObject, allowed_colours

CONSTRAINTS: tuple[str, ...] = ("grammar", "count", "shape", "colour", "size", "position", "relation")
_ORDINALS = ("first", "second", "third", "fourth")


def cell_of(position: str) -> tuple[int, int]:
    """(row, column) of a cell on the 3×3 grid, rows counted downwards."""
    return divmod(POSITIONS.index(position), 3)


def relation_holds(relation: str, subject: str, object: str) -> bool:
    """Whether an object in cell ``subject`` stands in ``relation`` to one in cell ``object`` (GenEval's rule)."""
    (ra, ca), (rb, cb) = cell_of(subject), cell_of(object)
    dr, dc = ra - rb, ca - cb
    if relation == "left of":
        return dc < 0 and 3 * dc * dc > dr * dr
    if relation == "right of":
        return dc > 0 and 3 * dc * dc > dr * dr
    if relation == "above":
        return dr < 0 and 3 * dr * dr > dc * dc
    if relation == "below":
        return dr > 0 and 3 * dr * dr > dc * dc
    raise ValueError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATION_PHRASES)}")


@dataclass(frozen=True)
class LayoutFailure:
    """One constraint a layout breaks: its kind (one of :data:`CONSTRAINTS`) and what is wrong, in words."""

    constraint: str
    message: str


def _prompt(prompt: PromptScene | str) -> PromptScene:
    return parse_geneval_prompt(prompt) if isinstance(prompt, str) else prompt


def _name(group: Group, slot_in_group: int) -> str:
    text = _group_text(Group(group.shape, 1, group.colour, group.size))
    return text if group.count == 1 else f"the {_ORDINALS[slot_in_group]} of {_group_text(group)}"


def _best_assignment(prompt: PromptScene, objects: tuple[ShapeObject, ...]) -> tuple[int | None, ...]:
    """The scene object of each prompt slot (None: none left) that satisfies the most constraints.

    Exhaustive over one-to-one assignments (at most 9·8·7·6 of them); ties go to the first
    in a fixed order, so the result is deterministic.
    """
    slots = prompt.slots
    n, m = len(slots), len(objects)
    # right[s][j]: how many of slot s's stated attributes object j has.
    right = [[sum(getattr(o, a) == v for a, v in prompt.groups[g].stated().items()) for o in objects] for g in slots]
    by_group = [[s for s, g in enumerate(slots) if g == k] for k in range(len(prompt.groups))]
    pairs = [(r.relation, a, b) for r in prompt.relations for a in by_group[r.subject] for b in by_group[r.object]]
    candidates = list(range(m)) + [None] * max(0, n - m)
    best, best_score = None, -1
    for perm in dict.fromkeys(itertools.permutations(candidates, n)):
        score = sum(right[s][j] for s, j in enumerate(perm) if j is not None)
        score += sum(perm[a] is not None and perm[b] is not None
                     and relation_holds(rel, objects[perm[a]].position, objects[perm[b]].position)
                     for rel, a, b in pairs)
        if score > best_score:
            best, best_score = perm, score
    return tuple(best) if best is not None else ()


def check_layout(prompt: PromptScene | str, layout: Scene) -> tuple[LayoutFailure, ...]:
    """Which of the prompt's constraints ``layout`` breaks; empty when it is consistent with the prompt.

    The LLM planner's checker (and, on what the judge reads from an image, GenEval's test):
    the layout must hold exactly the prompt's objects (``count``), each with every attribute
    the prompt states (``shape``, ``colour``, ``size``, ``position``, the last being the
    cell), and every relation must hold between every object of its two groups
    (``relation``). Objects are matched to the prompt's by the assignment that satisfies the
    most constraints; the failures are those of that assignment.
    """
    p = _prompt(prompt)
    if not isinstance(layout, Scene):
        raise TypeError(f"a layout is a Scene, got {type(layout).__name__}")
    objects = layout.objects
    failures: list[LayoutFailure] = []
    if len(objects) != p.n_objects:
        failures.append(LayoutFailure("count", f"the layout has {len(objects)} object{'s' * (len(objects) != 1)}, "
                                               f"the prompt asks for {p.n_objects}"))
    assignment = _best_assignment(p, objects)
    slot_in_group = [p.slots[:s].count(g) for s, g in enumerate(p.slots)]
    for s, (g, j) in enumerate(zip(p.slots, assignment)):
        group = p.groups[g]
        name = _name(group, slot_in_group[s])
        if j is None:
            if len(objects) == p.n_objects:  # cannot happen; kept so a failure is never silent
                failures.append(LayoutFailure("count", f"nothing in the layout is {name}"))
            continue
        obj = objects[j]
        for attribute, value in group.stated().items():
            if getattr(obj, attribute) != value:
                failures.append(LayoutFailure(attribute, f"{name}: its {attribute} is {getattr(obj, attribute)}, "
                                                         f"not {value}"))
    for r in p.relations:
        subjects = [(s, assignment[s]) for s, g in enumerate(p.slots) if g == r.subject]
        targets = [(s, assignment[s]) for s, g in enumerate(p.slots) if g == r.object]
        for (sa, a), (sb, b) in itertools.product(subjects, targets):
            if a is None or b is None:
                failures.append(LayoutFailure("relation", f"{_group_text(p.groups[r.subject])} "
                                              f"{RELATION_PHRASES[r.relation]} {_group_text(p.groups[r.object])}: "
                                              "an object is missing"))
            elif not relation_holds(r.relation, objects[a].position, objects[b].position):
                failures.append(LayoutFailure("relation", f"{_name(p.groups[r.subject], slot_in_group[sa])} in the "
                                              f"{objects[a].position} is not {RELATION_PHRASES[r.relation]} "
                                              f"{_name(p.groups[r.object], slot_in_group[sb])} in the "
                                              f"{objects[b].position}"))
    return tuple(failures)


def check_description(prompt: PromptScene | str, description: str) -> tuple[LayoutFailure, ...]:
    """:func:`check_layout` of a written description; one ``grammar`` failure when it does not parse as a layout."""
    try:
        layout = parse_description(description)
    except ParseError as err:
        return (LayoutFailure("grammar", str(err)),)
    return check_layout(prompt, layout)


def in_prompt_order(prompt: PromptScene | str, layout: Scene) -> tuple[ShapeObject, ...]:
    """The layout's objects in the order the prompt names them (what an upsampler copies left to right).

    Raises :class:`~llmimg.core.data.ParseError` if the layout is not consistent with the prompt.
    """
    p = _prompt(prompt)
    failures = check_layout(p, layout)
    if failures:
        raise ParseError(f"the layout does not follow the prompt: {failures[0].message}")
    return tuple(layout.objects[j] for j in _best_assignment(p, layout.objects))


def placements(prompt: PromptScene | str) -> list[tuple[str, ...]]:
    """Every assignment of cells to the prompt's objects (slot order) that its cells and relations allow."""
    p = _prompt(prompt)
    slots = p.slots
    fixed = {s: p.groups[g].position for s, g in enumerate(slots) if p.groups[g].position is not None}
    free_slots = [s for s in range(len(slots)) if s not in fixed]
    free_cells = [c for c in POSITIONS if c not in fixed.values()]
    by_group = [[s for s, g in enumerate(slots) if g == k] for k in range(len(p.groups))]
    pairs = [(r.relation, a, b) for r in p.relations for a in by_group[r.subject] for b in by_group[r.object]]
    found = []
    for cells in itertools.permutations(free_cells, len(free_slots)):
        where = dict(fixed)
        where.update(zip(free_slots, cells))
        if all(relation_holds(rel, where[a], where[b]) for rel, a, b in pairs):
            found.append(tuple(where[s] for s in range(len(slots))))
    return found


def plan_layout(prompt: PromptScene | str, rng: np.random.Generator,
                heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS) -> Scene:
    """The oracle planner: a layout for ``prompt`` drawn from the data's distribution; raises ParseError if none exists.

    Stated attributes are kept (held-out combinations included). Open ones are drawn as the
    GenEval-shaped world draws them: each open colour uniformly among the colours the shape
    takes in training, each size uniformly, and the cells uniformly among
    :func:`placements`. Objects of one counted group whose colour is open draw it one by one.
    """
    p = _prompt(prompt)
    options = placements(p)
    if not options:
        raise ParseError("no layout on the 3×3 grid satisfies the prompt's cells and relations")
    cells = options[int(rng.integers(len(options)))]
    objects = []
    for s, g in enumerate(p.slots):
        group = p.groups[g]
        colours = allowed_colours(group.shape, heldout_pairs)
        colour = group.colour or colours[int(rng.integers(len(colours)))]
        size = group.size or SIZES[int(rng.integers(len(SIZES)))]
        objects.append(ShapeObject(cells[s], group.shape, colour, size))
    return Scene(tuple(objects))
