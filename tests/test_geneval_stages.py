"""The stages on the GenEval-shaped world (issue 26): the world's interface, its tokenizer, the three stages
trained at smoke on it, and the pipeline scored on the protocol with the LLM on and off."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from llmimg.core.data import ParseError, ShapesWorld, describe_in_prompt_order
from llmimg.core.data.geneval import GenEvalWorld, parse_geneval_prompt, prompt_category
from llmimg.core.data.worlds import (WORLDS, check_world, parse_world_prompt, prompt_followed, read_prompt_words,
                                     upsample_target, world_samples)
from llmimg.core.text import (GENEVAL_CONTEXT_LENGTH, UngrammaticalPromptError, UnknownWordsError, check_tokenizer,
                              normalise_prompt, train_tokenizer, world_of, world_tokenizer)


@pytest.fixture(scope="module")
def geneval_tokenizer():
    return world_tokenizer("geneval")


# -- the world's interface ---------------------------------------------------------
def test_world_names_are_checked():
    assert WORLDS == ("shapes", "geneval")
    with pytest.raises(ValueError, match="unknown world 'genevel'; choose one of shapes, geneval"):
        check_world("genevel")


def test_world_samples_are_each_worlds_own():
    shapes = world_samples("shapes", 5, "val", seed=3, max_objects=1)
    assert [s.prompt for s in shapes] == [s.prompt for s in ShapesWorld(seed=3, max_objects=1).samples(5, "val")]
    geneval = world_samples("geneval", 5, "val", seed=3, start=2)
    assert [s.prompt for s in geneval] == [s.prompt for s in GenEvalWorld(seed=3).samples(5, "val", 2)]


def test_upsample_targets_name_the_objects_in_the_prompts_order_and_follow_it():
    for sample in world_samples("geneval", 200, "train"):
        target = upsample_target(sample)
        assert prompt_followed("geneval", sample.prompt, target), (sample.prompt, target)
        first = parse_geneval_prompt(sample.prompt).groups[0].shape
        assert target.split(" and ")[0].split(" in the ")[0].endswith(first)
    for sample in world_samples("shapes", 50, "train"):
        assert upsample_target(sample) == describe_in_prompt_order(sample.scene, sample.prompt)


def test_the_checker_reads_counts_and_relations():
    prompt = "three red circles"
    three = "a small red circle in the top left and a large red circle in the center and a small red circle in the " \
            "bottom right"
    assert prompt_followed("geneval", prompt, three)
    assert not prompt_followed("geneval", prompt, three.rsplit(" and ", 1)[0])  # two circles
    assert not prompt_followed("geneval", prompt, "not a description")
    left = "a red circle to the left of a blue square"
    assert prompt_followed("geneval", left, "a small red circle in the top left and a large blue square in the center")
    assert not prompt_followed("geneval", left, "a small blue square in the top left and a large red circle in the "
                                                "center")
    # Today's checker knows no counts or relations: the same words fail there.
    assert not prompt_followed("shapes", prompt, three)


def test_prompts_are_read_in_each_worlds_grammar():
    assert read_prompt_words("shapes", "red circle top left".split()) == "a red circle in the top left"
    assert read_prompt_words("geneval", "three red circles".split()) == "three red circles"
    with pytest.raises(ParseError):
        read_prompt_words("shapes", "three red circles".split())
    with pytest.raises(ParseError):
        parse_world_prompt("geneval", "a red circle to the left of")
    assert parse_world_prompt("shapes", "a red circle")[0].shape == "circle"


# -- the tokenizer knows its world -------------------------------------------------
def test_each_worlds_tokenizer_passes_its_check_and_names_its_world(geneval_tokenizer):
    today = train_tokenizer()
    assert (world_of(today), world_of(geneval_tokenizer)) == ("shapes", "geneval")
    assert check_tokenizer(today) is None and check_tokenizer(geneval_tokenizer) is None
    assert geneval_tokenizer.model_max_length == GENEVAL_CONTEXT_LENGTH


def test_a_damaged_geneval_tokenizer_is_refused(geneval_tokenizer):
    import copy

    short = copy.deepcopy(geneval_tokenizer)
    short.model_max_length = 32
    assert check_tokenizer(short) == f"its context is 32 tokens, not {GENEVAL_CONTEXT_LENGTH}"


def test_typed_prompts_are_normalised_in_the_tokenizers_world(geneval_tokenizer):
    assert normalise_prompt(geneval_tokenizer, "Three red circles!") == "three red circles"
    assert normalise_prompt(geneval_tokenizer, "a red circle to the left of a blue square.") == \
        "a red circle to the left of a blue square"
    assert prompt_category(normalise_prompt(geneval_tokenizer, "a circle in the top left")) == "cell"
    with pytest.raises(UngrammaticalPromptError, match="cannot be read"):
        normalise_prompt(geneval_tokenizer, "three red circle")
    with pytest.raises(UnknownWordsError, match="'above'"):
        normalise_prompt(train_tokenizer(), "a red circle above a square")  # today's tokenizer has no relations


# -- configs and cache keys -----------------------------------------------------------
def test_the_world_enters_the_clips_identity_only_when_it_is_not_todays():
    from llmimg.stages import clip

    today, geneval = clip.default_config("default"), clip.default_config("default", "geneval")
    assert "world" not in today.identity()  # today's cached models keep their keys
    assert geneval.identity()["world"] == "geneval"
    assert geneval.model_name == "shapes-clip-small-geneval"
    assert clip.key(today) != clip.key(geneval)
    with pytest.raises(ValueError, match="unknown world"):
        clip.ClipConfig(world="nowhere")


def test_a_model_config_too_small_for_the_world_is_refused():
    from llmimg.stages import clip

    with pytest.raises(ValueError, match="the geneval world's tokenizer has 44 tokens and a context of 40"):
        clip.build(clip.ClipConfig(model_name="shapes-clip-tiny", world="geneval"))


# -- the stages, trained at smoke on the world ----------------------------------------
@pytest.fixture(scope="module")
def geneval_pipeline(smoke_cache):
    from llmimg.pipelines import shapes

    return shapes.get("smoke", progress=False, world="geneval")


def test_the_stages_follow_their_clips_world(geneval_pipeline):
    from llmimg.stages import clip, generator, llm

    assert world_of(geneval_pipeline.tokenizer) == "geneval"
    loaded = clip.ShapesCLIP.from_pretrained(clip.get("smoke", progress=False, world="geneval").path)
    assert world_of(loaded.tokenizer) == "geneval"
    writer = llm.get("smoke", progress=False, world="geneval")
    assert writer.lm.gpt2.config.n_positions >= GENEVAL_CONTEXT_LENGTH * 2
    image_generator = generator.get("smoke", progress=False, world="geneval")
    assert image_generator.path.parent == writer.path.parent  # the same profile's cache


def test_the_geneval_llm_is_scored_as_a_planner(geneval_pipeline):
    from llmimg.stages import llm

    metrics = llm.evaluate(llm.get("smoke", progress=False, world="geneval"), n=14)
    assert metrics["world"] == "geneval"
    for key in ("planner_faithful", "model_planner_faithful_counting", "heldout_planner_faithful_position",
                "caption_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0 and f"{key}_se" in metrics
    assert sum(v for k, v in metrics.items() if k.startswith("n_") and not k.startswith("n_heldout")) == 14


def test_the_protocol_draws_the_same_noise_with_the_llm_on_and_off(geneval_pipeline):
    from llmimg.core.evaluation.protocol import load_eval_set
    from llmimg.pipelines.protocol import draw_eval_set, subset

    eval_set = subset(load_eval_set("val"), 1)
    assert len(eval_set) == 7 and {i.category for i in eval_set.items} == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr", "cell"}
    off, none = draw_eval_set(geneval_pipeline, eval_set, upsample=False, batch_size=5)
    again, _ = draw_eval_set(geneval_pipeline, eval_set, upsample=False, batch_size=28)
    assert none is None and off.dtype == np.uint8 and off.shape == (28, 32, 32, 3)
    # A batch's size changes nothing but float rounding (a level of 255 at most, in a few pixels).
    assert np.abs(off.astype(int) - again).max() <= 1
    on, faithful = draw_eval_set(geneval_pipeline, eval_set, upsample=True)
    assert on.shape == off.shape and len(faithful) == 28


def test_evaluate_protocol_reports_rates_and_paired_verdicts_per_category(geneval_pipeline):
    from llmimg.pipelines.protocol import evaluate_protocol

    result = evaluate_protocol(geneval_pipeline, "heldout", n_per_category=1)
    json.dumps(result)
    assert (result["split"], result["n_prompts"], result["images_per_prompt"]) == ("heldout", 7, 4)
    for setting in ("llm_on", "llm_off"):
        assert set(result[setting]["categories"]) == {"single_object", "two_object", "counting", "colors",
                                                      "position", "color_attr", "cell"}
        assert result[setting]["overall"]["n_prompts"] == 6  # GenEval's six; the cell beside them
    paired = result["paired"]
    assert set(paired) == {"overall", *result["llm_on"]["categories"]}
    for row in paired.values():
        assert row["verdict"] in ("within noise", "llm_on ahead", "llm_off ahead") and "paired se" in row["sentence"]
    assert result["planner_faithful"]["all"]["n"] == 28
    # The record's per-image results give back its scores, to pair with a later run on the same set.
    from llmimg.pipelines.protocol import score_from_record

    again = score_from_record(result, "llm_off")
    assert again.as_dict() == result["llm_off"] and len(result["per_image"]["llm_on"]) == 28


def test_the_prompt_trained_arm_differs_from_the_pipelines_generator_only_in_its_texts():
    from llmimg.pipelines.protocol import prompt_trained_config
    from llmimg.stages import generator

    base, arm = generator.default_config("default", "geneval"), prompt_trained_config("default")
    assert arm == replace(base, prompt_rate=1.0, curve_every=0)
    assert arm.identity() != base.identity()  # its own cache entry


def test_the_prompt_trained_arm_is_drawn_on_the_same_prompts_and_paired_with_the_llm(geneval_pipeline):
    from llmimg.pipelines import shapes
    from llmimg.pipelines.protocol import PROMPT_TRAINED, evaluate_protocol, prompt_trained_config
    from llmimg.stages import generator, llm

    writer = llm.get("smoke", progress=False, world="geneval")
    baseline = generator.get("smoke", config=prompt_trained_config("smoke"), clip=writer.clip, progress=False)
    arm = shapes.ShapesPipeline.from_stages(writer, baseline)
    result = evaluate_protocol(geneval_pipeline, "val", n_per_category=1, prompt_trained=arm)
    json.dumps(result)
    assert set(result[PROMPT_TRAINED]["categories"]) == set(result["llm_on"]["categories"])
    assert len(result["per_image"][PROMPT_TRAINED]) == 28
    rows = result["paired_prompt_trained"]
    assert set(rows) == {"overall", *result["llm_on"]["categories"]}
    assert all(r["verdict"] in ("within noise", "llm_on ahead", "prompt_trained ahead") for r in rows.values())
    assert "a generator trained on prompts" in rows["overall"]["sentence"]


def test_the_protocol_refuses_a_pipeline_of_todays_world(smoke_pipeline):
    from llmimg.pipelines.protocol import evaluate_protocol

    with pytest.raises(ValueError, match="GenEval-shaped world's language"):
        evaluate_protocol(smoke_pipeline)


def test_subset_keeps_the_first_prompts_of_each_category():
    from llmimg.core.evaluation.protocol import load_eval_set
    from llmimg.pipelines.protocol import subset

    full = load_eval_set("val")
    assert subset(full, None) is full
    two = subset(full, 2)
    assert [i.id for i in two.items][:2] == ["val-single_object-000", "val-single_object-001"]
    assert len(two) == 14 and two.image_seeds()[:4] == full.image_seeds()[:4]
    with pytest.raises(ValueError, match="at least 1"):
        subset(full, 0)


def test_the_geneval_generator_draws_more_counting_scenes_and_todays_keeps_its_key():
    from collections import Counter

    from llmimg.stages import generator

    today, geneval = generator.default_config("smoke"), generator.default_config("smoke", "geneval")
    assert "category_weights" not in today.identity()
    assert geneval.category_weights == generator.GENEVAL_CATEGORY_WEIGHTS
    assert generator.GeneratorConfig.from_dict(geneval.as_dict()) == geneval  # JSON's lists come back as tuples
    drawn = Counter(s.category for s in world_samples("geneval", 700, seed=1,
                                                      category_weights=geneval.category_weights))
    assert drawn["counting"] > 2 * max(n for c, n in drawn.items() if c != "counting")
    bank = generator.make_bank(geneval, "geneval")
    assert len(bank) == geneval.n_train and any(" and " in d for d in bank.descriptions)


def test_the_geneval_recipes_are_compared_with_the_default_on_the_same_prompts_and_noise(geneval_pipeline, tmp_path,
                                                                                        monkeypatch):
    from llmimg.research import geneval_recipes

    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    record = geneval_recipes.run("smoke", n_per_category=1, progress=False)
    assert json.loads(geneval_recipes.results_path("smoke").read_text()) == json.loads(json.dumps(record))
    assert set(record["recipes"]) == set(geneval_recipes.RECIPES)
    for name, rows in record["paired"].items():
        assert name != geneval_recipes.DEFAULT and set(rows) == {"overall", *record["recipes"][name]["val"][
            "llm_on"]["categories"]}
        assert rows["overall"]["n"] == 6  # GenEval's six categories' prompts, the unit of the pairing


def test_models_saved_before_the_world_fields_existed_still_load_with_todays_world():
    from llmimg.stages import clip, generator

    for config, name in ((clip.default_config("default"), "world"),
                         (generator.default_config("default"), "category_weights")):
        saved = {k: v for k, v in config.as_dict().items() if k != name}  # a manifest written before the field
        assert type(config).from_dict(saved) == config
    with pytest.raises(ValueError, match="lacks 'seed'"):  # every other field still must be there
        clip.ClipConfig.from_dict({k: v for k, v in clip.default_config("default").as_dict().items() if k != "seed"})


def test_geneval_recipes_change_only_what_they_name():
    from llmimg.research import geneval_recipes as R
    from llmimg.stages import generator

    base = generator.default_config("default", "geneval")
    assert R.recipe_config(R.DEFAULT, "default") == base and base.train.steps == 2400
    assert generator.default_config("default").train.steps == 1200  # today's world keeps its recipe
    shorter = R.recipe_config("counting ×3, half the steps", "default")
    assert shorter == replace(base, train=replace(base.train, steps=1200))
    assert R.recipe_config("categories as the world draws them, half the steps", "default") == replace(
        shorter, category_weights=None)
    with pytest.raises(ValueError, match="unknown recipe 'x'"):
        R.recipe_config("x")
