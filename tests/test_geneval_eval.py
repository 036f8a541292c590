"""The GenEval-shaped world's judge (counts and relations, validated on real renders) and its evaluation protocol
(committed prompt sets, loader, per-category scores with standard errors, per-image arrays for paired tests)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmimg.core.config import project_root
from llmimg.core.data import POSITIONS, Scene, ShapeObject, render
from llmimg.core.data.geneval import CATEGORIES, GENEVAL_CATEGORIES, GenEvalWorld
from llmimg.core.evaluation.geneval_judge import judge_accuracy_on_renders, judge_layouts, prompts_followed
from llmimg.core.evaluation.protocol import (EVAL_SPLITS, IMAGES_PER_PROMPT, PROMPTS_PER_CATEGORY, EvalItem, EvalSet,
                                             eval_set_path, judge_protocol, load_eval_set, make_eval_set,
                                             compare_settings, paired_arrays, score_protocol,
                                             write_eval_sets)

WORLD = GenEvalWorld()


# -- the judge on real renders ------------------------------------------------------------------
@pytest.mark.parametrize("split", ["val", "heldout"])
def test_ground_truth_renders_of_every_category_are_judged_right(split):
    rates = judge_accuracy_on_renders(WORLD, 60, split)
    assert set(rates) == set(CATEGORIES)
    assert min(rates.values()) >= 0.99, rates


def _perturbed(category: str, n: int) -> tuple[list[np.ndarray], list[str]]:
    """Renders of ``category``'s samples made wrong: an object dropped or added (count), or two cells swapped."""
    images, prompts = [], []
    for i in range(n):
        s = WORLD.sample(i, "val", category=category)
        objects = list(s.scene.objects)
        if category == "position":  # swap the two objects' cells: the relation turns round
            a, b = objects
            objects = [ShapeObject(b.position, a.shape, a.colour, a.size),
                       ShapeObject(a.position, b.shape, b.colour, b.size)]
        elif i % 2 and len(objects) > 1:  # one object fewer
            objects = objects[:-1]
        else:  # one more object of the same kind in a free cell
            free = next(p for p in POSITIONS if p not in {o.position for o in objects})
            objects.append(ShapeObject(free, objects[0].shape, objects[0].colour, objects[0].size))
        images.append(render(Scene(tuple(objects))))
        prompts.append(s.prompt)
    return images, prompts


@pytest.mark.parametrize("category", ["counting", "two_object", "single_object", "color_attr"])
def test_a_wrong_count_is_judged_wrong(category):
    images, prompts = _perturbed(category, 40)
    failures = judge_layouts(images, prompts)
    assert all(any(f.constraint == "count" for f in fs) for fs in failures)


def test_a_swapped_relation_is_judged_wrong():
    images, prompts = _perturbed("position", 60)
    followed = prompts_followed(images, prompts)
    # A swap can leave the relation true only when the two cells stand in the relation both ways, which the
    # 60-degree rule never allows; so every swapped render is wrong, for the relation.
    assert not followed.any()
    assert all(any(f.constraint == "relation" for f in fs) for fs in judge_layouts(images, prompts))


def test_an_empty_image_is_judged_wrong_and_inputs_must_pair_up():
    blank = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    assert judge_layouts(blank, ["a circle"])[0][0].constraint == "count"
    with pytest.raises(ValueError, match="pair up"):
        judge_layouts(blank, ["a circle", "a square"])
    with pytest.raises(TypeError, match="sequence of prompts"):
        judge_layouts(blank, "a circle")


# -- the committed prompt sets --------------------------------------------------------------------
@pytest.mark.skipif(project_root() is None, reason="the committed files live in a source checkout")
@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_committed_prompt_sets_equal_their_regeneration(split):
    path = eval_set_path(split)
    assert path.read_text(encoding="utf-8") == make_eval_set(split).to_json(), \
        f"data/eval/{split}.json is not what make_eval_set writes: run 'llmimg data eval-sets'"
    loaded = load_eval_set(split)
    assert loaded == make_eval_set(split)
    assert len(loaded) == PROMPTS_PER_CATEGORY * len(CATEGORIES) and loaded.images_per_prompt == IMAGES_PER_PROMPT
    seeds = loaded.image_seeds()
    assert len(set(seeds)) == len(seeds) == loaded.n_images


def test_prompt_sets_hold_each_category_with_its_compositions():
    from llmimg.core.data.geneval import parse_geneval_prompt, prompt_category

    for split in EVAL_SPLITS:
        s = make_eval_set(split, n_per_category=20)
        assert [i.category for i in s.items] == [c for c in CATEGORIES for _ in range(20)]
        assert all(prompt_category(parse_geneval_prompt(i.prompt)) == i.category for i in s.items)
    val, held = make_eval_set("val", 20), make_eval_set("heldout", 20)
    counting = {i.prompt for i in held.items if i.category == "counting"}
    assert counting.isdisjoint(i.prompt for i in val.items)
    assert not set(val.image_seeds()) & set(held.image_seeds())


def test_write_load_and_refuse_damaged_sets(tmp_path):
    paths = write_eval_sets(tmp_path)
    assert [p.name for p in paths] == ["val.json", "heldout.json"]
    assert load_eval_set("heldout", tmp_path) == make_eval_set("heldout")
    data = json.loads(paths[0].read_text())
    data["version"] = 99
    paths[0].write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version 99"):
        load_eval_set("val", tmp_path)
    paths[0].write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        load_eval_set("val", tmp_path)
    with pytest.raises(ValueError, match="missing"):
        load_eval_set("val", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="prompt sets for val, heldout"):
        load_eval_set("train")


def test_the_cli_writes_and_checks_the_sets(tmp_path, capsys):
    from llmimg.cli.main import main

    assert main(["data", "eval-sets", "--check", "-o", str(tmp_path)]) == 1
    assert "is missing" in capsys.readouterr().out
    assert main(["data", "eval-sets", "-o", str(tmp_path)]) == 0
    assert main(["data", "eval-sets", "--check", "-o", str(tmp_path)]) == 0
    (tmp_path / "val.json").write_text((tmp_path / "val.json").read_text().replace("a diamond", "a circle", 1))
    assert main(["data", "eval-sets", "--check", "-o", str(tmp_path)]) == 1
    assert "differs" in capsys.readouterr().out


# -- scoring ------------------------------------------------------------------------------------------
def _tiny_set() -> EvalSet:
    """Two prompts per category, two images each."""
    items, seed = [], 0
    for c in CATEGORIES:
        for k in range(2):
            items.append(EvalItem(f"val-{c}-{k}", c, "a circle", (seed, seed + 1)))
            seed += 2
    return EvalSet("val", 1, 2, tuple(items))


def test_scores_per_category_and_overall_with_known_answers():
    s = _tiny_set()
    correct = np.ones((len(s), 2), dtype=bool)
    correct[2] = [False, False]  # two_object: prompt means 0 and 1
    correct[4] = [True, False]  # counting: prompt means 0.5 and 1
    score = score_protocol(s, correct)
    two, counting = score.per_category["two_object"], score.per_category["counting"]
    assert (two.rate, two.n_images, two.n_prompts) == (0.5, 4, 2)
    assert two.se == pytest.approx(np.std([0.0, 1.0], ddof=1) / math.sqrt(2))
    assert counting.rate == 0.75 and counting.se == pytest.approx(np.std([0.5, 1.0], ddof=1) / math.sqrt(2))
    assert score.per_category["colors"].rate == 1.0 and score.per_category["colors"].se == 0.0
    assert score.overall.rate == pytest.approx((4 + 0.5 + 0.75) / 6)
    assert score.overall.se == pytest.approx(math.hypot(two.se, counting.se) / 6)
    assert score.overall.n_images == 24 and "cell" in score.per_category  # the seventh beside, not inside
    d = score.as_dict()
    assert set(d["categories"]) == set(CATEGORIES) and d["overall_of"] == list(GENEVAL_CATEGORIES)
    assert set(d["overall"]) == {"rate", "se", "n_images", "n_prompts"}
    json.dumps(d)


def test_per_image_arrays_pair_two_settings_drawn_on_the_same_set():
    s = _tiny_set()
    a = score_protocol(s, np.ones(s.n_images))
    b_correct = np.ones(s.n_images)
    b_correct[9] = 0  # counting (after 2 × 2 images each of single_object, two_object): first prompt, second image
    b = score_protocol(s, b_correct)
    x, y = paired_arrays(a, b, "counting")
    assert x.tolist() == [1, 1, 1, 1] and y.tolist() == [1, 0, 1, 1]
    assert paired_arrays(a, b)[1].sum() == s.n_images - 1
    other = score_protocol(make_eval_set("val", 2, 2), np.ones(28))
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_arrays(a, other)


def test_settings_are_compared_prompt_by_prompt_with_the_two_standard_error_rule():
    s = _tiny_set()  # 14 prompts, 2 images each
    a_correct, b_correct = np.ones((len(s), 2)), np.ones((len(s), 2))
    b_correct[:6] = 0  # b misses every image of the first six prompts
    a, b = score_protocol(s, a_correct), score_protocol(s, b_correct)
    d = compare_settings(a, b)
    diffs = np.r_[np.ones(6), np.zeros(8)]
    assert d.n == 14 and d.diff == pytest.approx(6 / 14)
    assert d.se == pytest.approx(diffs.std() / math.sqrt(14))  # the textbook paired SE: ddof 0, as McNemar's
    assert d.verdict("a", "b") == "a ahead"
    b_correct[:6] = 1
    b_correct[0, 0] = 0  # one image of one prompt: half a prompt, far inside the noise
    assert compare_settings(a, score_protocol(s, b_correct)).verdict("a", "b") == "within noise"


def test_scoring_refuses_results_that_do_not_fit():
    s = _tiny_set()
    with pytest.raises(ValueError, match="got 3 results"):
        score_protocol(s, [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        score_protocol(s, np.full(s.n_images, 0.5))


def test_judging_renders_of_a_prompt_set_scores_one():
    s = make_eval_set("heldout", n_per_category=3, images_per_prompt=2)
    from llmimg.core.data.geneval import parse_geneval_prompt, plan_layout
    from llmimg.core.seeding import numpy_rng

    images = [render(plan_layout(parse_geneval_prompt(p), numpy_rng(seed, "eval")))
              for p, seed in zip(s.image_prompts(), s.image_seeds())]
    score = judge_protocol(s, np.stack(images))
    assert score.overall.rate == 1.0 and all(r.rate == 1.0 for r in score.per_category.values())


def test_overall_is_compared_as_geneval_defines_it_the_mean_of_six_category_differences():
    from llmimg.core.evaluation.protocol import compare_overall

    s = _tiny_set()  # 2 prompts per category in CATEGORIES order, 2 images each; the cell's 2 prompts come last
    a_correct, b_correct = np.ones((len(s), 2)), np.ones((len(s), 2))
    b_correct[0] = 0  # single_object: b misses its first prompt entirely (a difference of 1/2 there)
    b_correct[12:] = 0  # the cell: outside the overall, so it moves nothing here
    a, b = score_protocol(s, a_correct), score_protocol(s, b_correct)
    d = compare_overall(a, b)
    assert d.diff == pytest.approx(0.5 / 6) and d.diff == pytest.approx(a.overall.rate - b.overall.rate)
    one = compare_settings(a, b, "single_object")
    assert d.se == pytest.approx(one.se / 6)  # the other five categories do not differ: se 0
    assert d.n == 12 and (d.a_only, d.p_value) == (None, None)
