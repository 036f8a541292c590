"""The GenEval-shaped world (issue 26): its grammar (counts, plurals, relations), the layout checker, the oracle
planner, the held-out compositions and the opt-in tokenizer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmimg.core.data import COLOUR_NAMES, HELDOUT_PAIRS, SHAPES, ParseError, Scene, ShapeObject, describe
from llmimg.core.data.geneval import (CATEGORIES, GENEVAL_CATEGORIES, HELDOUT_COUNTS, HELDOUT_RELATIONS, RELATIONS,
                                      GenEvalWorld, Group, PromptScene, Relation, check_description, check_layout,
                                      format_geneval_prompt, in_prompt_order, parse_geneval_prompt, placements,
                                      plan_layout, prompt_category, relation_holds, relation_is_heldout)
from llmimg.core.seeding import numpy_rng

WORLD = GenEvalWorld()


def scene(*objects: tuple[str, str, str, str]) -> Scene:
    """A scene from (position, shape, colour, size) tuples."""
    return Scene(tuple(ShapeObject(*o) for o in objects))


# -- grammar ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("three red circles", PromptScene((Group("circle", 3, "red"),))),
    ("two crosses", PromptScene((Group("cross", 2),))),
    ("four large semicircles", PromptScene((Group("semicircle", 4, size="large"),))),
    ("a red circle to the left of a blue square",
     PromptScene((Group("circle", colour="red"), Group("square", colour="blue")), (Relation(0, "left of", 1),))),
    ("a triangle to the right of a diamond", PromptScene((Group("triangle"), Group("diamond")),
                                                         (Relation(0, "right of", 1),))),
    ("an orange cross above a circle", PromptScene((Group("cross", colour="orange"), Group("circle")),
                                                   (Relation(0, "above", 1),))),
    ("a square below two circles", PromptScene((Group("square"), Group("circle", 2)), (Relation(0, "below", 1),))),
    ("a circle in the top left and a small white square", PromptScene(
        (Group("circle", position="top left"), Group("square", colour="white", size="small")))),
])
def test_prompts_parse_to_their_meaning_and_write_back_unchanged(text, expected):
    assert parse_geneval_prompt(text) == expected
    assert format_geneval_prompt(expected) == text


def test_every_prompt_of_todays_world_reads_the_same():
    from llmimg.core.data import ShapesWorld, parse_prompt

    for sample in ShapesWorld(seed=3).samples(200, "train"):
        groups = parse_geneval_prompt(sample.prompt).groups
        assert [(g.shape, g.colour, g.size, g.position, g.count) for g in groups] == [
            (p.shape, p.colour, p.size, p.position, 1) for p in parse_prompt(sample.prompt)]


@pytest.mark.parametrize("text,message", [
    ("three red circle", "take the plural, 'circles'"),
    ("a circles", "should be 'circle'"),
    ("two crosss", "unknown word 'crosss'"),
    ("five circles", "expected 'a', 'an' or a number"),
    ("three circles in the top left", "cannot share one cell"),
    ("a circle at the top left", "a cell reads 'in the top left', not 'at the top left'"),
    ("a circle to the left a square", "unexpected 'to the left a'"),
    ("a circle above", "got nothing"),
    ("a circle in the center above a square", "a cell and a relation"),
    ("four circles and a square", "at most 4"),
    ("a circle in the center and a square in the center", "same cell"),
    ("", "empty"),
])
def test_bad_prompts_are_refused_with_one_clear_line(text, message):
    with pytest.raises(ParseError, match=message):
        parse_geneval_prompt(text)


@pytest.mark.parametrize("text,category", [
    ("a circle", "single_object"), ("a circle and a square", "two_object"), ("three circles", "counting"),
    ("two blue crosses", "counting"), ("a red circle", "colors"), ("a circle above a square and a cross", None),
    ("a red circle to the left of a blue square", "position"), ("a red circle and a blue square", "color_attr"),
    ("a circle in the top left", "cell"), ("a red circle and a square", None), ("a large circle", None),
])
def test_prompt_category_by_form(text, category):
    assert prompt_category(text) == category


# -- relations and the checker ------------------------------------------------------------
@pytest.mark.parametrize("subject,relation,other,holds", [
    ("top left", "left of", "top right", True), ("middle left", "left of", "center", True),
    ("top left", "left of", "center", True), ("top left", "above", "center", True),  # diagonal: both
    ("top left", "left of", "bottom middle", False), ("top left", "above", "bottom middle", True),  # 1 col, 2 rows
    ("bottom left", "left of", "top right", True), ("center", "left of", "center", False),
    ("top middle", "left of", "bottom middle", False), ("bottom middle", "below", "top middle", True),
    ("middle right", "right of", "middle left", True), ("top right", "right of", "middle left", True),
])
def test_relations_follow_genevals_sixty_degree_rule(subject, relation, other, holds):
    assert relation_holds(relation, subject, other) is holds


def test_the_checker_accepts_consistent_layouts_and_names_each_broken_constraint():
    prompt = "a red circle to the left of a blue square"
    good = scene(("top left", "circle", "red", "small"), ("top right", "square", "blue", "large"))
    assert check_layout(prompt, good) == ()
    swapped = scene(("top right", "circle", "red", "small"), ("top left", "square", "blue", "large"))
    assert [f.constraint for f in check_layout(prompt, swapped)] == ["relation"]
    recoloured = scene(("top left", "circle", "green", "small"), ("top right", "square", "blue", "large"))
    assert [f.constraint for f in check_layout(prompt, recoloured)] == ["colour"]
    extra = scene(("top left", "circle", "red", "small"), ("top right", "square", "blue", "large"),
                  ("center", "cross", "white", "small"))
    assert [f.constraint for f in check_layout(prompt, extra)] == ["count"]


def test_the_checker_counts_exactly():
    three = scene(("top left", "circle", "red", "small"), ("center", "circle", "red", "large"),
                  ("bottom right", "circle", "red", "small"))
    assert check_layout("three red circles", three) == ()
    assert check_layout("three circles", three) == ()
    assert [f.constraint for f in check_layout("two red circles", three)] == ["count"]
    assert [f.constraint for f in check_layout("four red circles", three)] == ["count"]
    one_blue = scene(("top left", "circle", "red", "small"), ("center", "circle", "blue", "large"),
                     ("bottom right", "circle", "red", "small"))
    failures = check_layout("three red circles", one_blue)
    assert [f.constraint for f in failures] == ["colour"] and "second of three red circles" in failures[0].message


def test_check_description_reports_unreadable_text_as_grammar():
    assert [f.constraint for f in check_description("a circle", "a big circle")] == ["grammar"]
    assert check_description("a circle", "a small red circle in the center") == ()


def test_in_prompt_order_copies_the_prompts_order():
    layout = scene(("top left", "square", "blue", "large"), ("bottom right", "circle", "red", "small"))
    ordered = in_prompt_order("a red circle below a blue square", layout)
    assert [o.shape for o in ordered] == ["circle", "square"]
    with pytest.raises(ParseError, match="does not follow"):
        in_prompt_order("a red circle above a blue square", layout)


# -- the oracle planner ---------------------------------------------------------------------
def test_placements_are_exactly_the_cell_assignments_that_satisfy_the_relation():
    options = placements("a circle to the left of a square")
    assert len(options) == len(set(options)) and options
    from itertools import permutations
    from llmimg.core.data import POSITIONS

    expected = {p for p in permutations(POSITIONS, 2) if relation_holds("left of", *p)}
    assert set(options) == expected
    assert len(placements("four circles")) == 9 * 8 * 7 * 6


def test_the_planner_draws_valid_layouts_uniformly_over_placements():
    prompt = parse_geneval_prompt("a red circle above a square")
    options = placements(prompt)
    counts = Counter()
    for i in range(3000):
        layout = plan_layout(prompt, numpy_rng(0, "eval", i))
        assert check_layout(prompt, layout) == ()
        circle = next(o for o in layout if o.shape == "circle")
        square = next(o for o in layout if o.shape == "square")
        counts[circle.position, square.position] += 1
        assert square.pair not in HELDOUT_PAIRS
    assert set(counts) == set(options)
    expected = 3000 / len(options)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < len(options) + 5 * np.sqrt(2 * len(options))  # loose: far from uniform fails


def test_the_planner_refuses_impossible_prompts():
    with pytest.raises(ParseError, match="no layout"):
        plan_layout(PromptScene((Group("circle", position="top left"), Group("square", position="top right")),
                                (Relation(0, "right of", 1),)), numpy_rng(0, "eval"))


# -- the world ---------------------------------------------------------------------------------
def test_samples_are_deterministic_and_consistent():
    for split in ("train", "val", "heldout"):
        for i in range(120):
            a, b = WORLD.sample(i, split), WORLD.sample(i, split)
            assert (a.prompt, a.description, a.category) == (b.prompt, b.description, b.category)
            assert np.array_equal(a.image, b.image)
            assert prompt_category(a.prompt) == a.category
            assert parse_geneval_prompt(a.prompt) == a.prompt_scene
            assert check_layout(a.prompt, a.scene) == () and a.description == describe(a.scene)
            assert 1 <= len(a.scene) <= 4
    assert WORLD.sample(0).prompt != GenEvalWorld(seed=1).sample(0).prompt or \
        WORLD.sample(0).description != GenEvalWorld(seed=1).sample(0).description


def test_every_category_is_drawn():
    assert set(WORLD.sample(i).category for i in range(300)) == set(CATEGORIES)
    assert len(GENEVAL_CATEGORIES) == 6 and "cell" not in GENEVAL_CATEGORIES


def test_training_never_sees_a_held_out_composition():
    for i in range(1500):
        s = WORLD.sample(i, "train")
        assert not s.scene.pairs & set(HELDOUT_PAIRS)
        shapes = Counter(o.shape for o in s.scene)
        if s.category != "counting":
            assert max(shapes.values()) == 1  # only counting puts two objects of one shape in a scene
        else:
            (shape, n), = shapes.items()
            assert (n, shape) not in HELDOUT_COUNTS
        if s.category == "position":
            a, b = s.prompt_scene.groups
            assert not relation_is_heldout(a.shape, s.prompt_scene.relations[0].relation, b.shape)


def test_every_heldout_prompt_holds_its_categorys_held_out_composition():
    for category in CATEGORIES:
        for i in range(60):
            s = WORLD.sample(i, "heldout", category=category)
            p = s.prompt_scene
            if category in ("colors", "color_attr", "cell"):
                assert {(g.colour, g.shape) for g in p.groups} & set(HELDOUT_PAIRS)
            elif category == "counting":
                assert (p.groups[0].count, p.groups[0].shape) in HELDOUT_COUNTS
            elif category == "position":
                a, b = p.groups
                assert relation_is_heldout(a.shape, p.relations[0].relation, b.shape)
                assert not {(g.colour, g.shape) for g in p.groups} & set(HELDOUT_PAIRS)
    # both wordings of a held-out relation count
    assert relation_is_heldout("square", "below", "circle") and relation_is_heldout("circle", "above", "square")
    assert ("circle", "above") in HELDOUT_RELATIONS and not relation_is_heldout("circle", "below", "square")


def test_bad_world_arguments_are_refused():
    with pytest.raises(ValueError, match="category_weights"):
        GenEvalWorld(category_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="unknown split"):
        WORLD.sample(0, "test")
    with pytest.raises(ValueError, match="unknown category"):
        WORLD.sample(0, "train", category="size")
    only_counting = GenEvalWorld(category_weights=(0, 0, 1, 0, 0, 0, 0))
    assert {only_counting.sample(i).category for i in range(30)} == {"counting"}


# -- the opt-in tokenizer -----------------------------------------------------------------------
def test_the_geneval_tokenizer_knows_every_word_and_fits_four_objects():
    from llmimg.core.text import GENEVAL_CONTEXT_LENGTH, check_prompt, geneval_words, train_geneval_tokenizer

    tok = train_geneval_tokenizer(texts=[s.description for s in WORLD.samples(50)])
    vocab = tok.get_vocab()
    assert set(geneval_words()) <= set(vocab)
    for word in ("three", "circles", "crosses", "left", "of", "above", "below", "to"):
        assert word in vocab
    four = max((WORLD.sample(i, "heldout", category="counting") for i in range(30)), key=lambda s: len(s.scene))
    ids = tok(four.description)["input_ids"]
    assert len(ids) <= GENEVAL_CONTEXT_LENGTH and 3 not in ids  # no <unk>
    assert check_prompt(tok, "a red circle to the left of a blue square")


# -- properties -------------------------------------------------------------------------------
_groups = st.builds(Group, st.sampled_from(SHAPES), st.integers(1, 2), st.none() | st.sampled_from(COLOUR_NAMES))


@given(st.lists(_groups, min_size=1, max_size=2), st.none() | st.sampled_from(RELATIONS), st.integers(0, 2**32 - 1))
def test_any_prompt_writes_back_and_its_oracle_layout_passes_the_checker(groups, relation, seed):
    relations = (Relation(0, relation, 1),) if relation is not None and len(groups) == 2 else ()
    prompt = PromptScene(tuple(groups), relations)
    assert parse_geneval_prompt(format_geneval_prompt(prompt)) == prompt
    layout = plan_layout(prompt, np.random.default_rng(seed))
    assert check_layout(prompt, layout) == ()
    assert check_description(format_geneval_prompt(prompt), describe(layout)) == ()
