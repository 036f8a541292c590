"""``ShapesPipeline`` on the smoke models: batching, timings, seeding, saving and loading, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmimg.core.store import CheckpointError
from llmimg.core.data import PartialObject, ShapesWorld, format_prompt, parse_prompt
from llmimg.core.data.world import COLOUR_NAMES, POSITIONS, SHAPES, SIZES
from llmimg.stages.generator import SCHEDULERS
from llmimg.pipelines.common import STAGES
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, ShapesPipeline
from llmimg.core.text import (EmptyPromptError, PromptError, PromptTooLongError, UngrammaticalPromptError,
                              UnknownWordsError)

STEPS = 2  # enough to run every scheduler's multistep code; each call takes milliseconds at smoke


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(pipe: ShapesPipeline, prompt: str | list[str] = "a red circle", seed: int = 0, **kwargs):
    """One call at STEPS steps, images as a float array, seeded unless a generator is given."""
    kwargs.setdefault("generator", seeded(seed))
    return pipe(prompt, num_inference_steps=STEPS, output_type="np", **kwargs)


@pytest.fixture
def pipe(smoke_pipeline):
    """The session's pipeline, its sampler set back afterwards (some tests swap it)."""
    yield smoke_pipeline
    smoke_pipeline.use_scheduler(DEFAULT_SCHEDULER)


@pytest.fixture
def saved_copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "copy")


# -- calls ------------------------------------------------------------------------------
def test_one_prompt_gives_one_image_and_description(pipe):
    out = pipe("a red circle", num_inference_steps=STEPS, generator=seeded(0))
    assert len(out.images) == 1 and out.images[0].size == (32, 32) and out.images[0].mode == "RGB"
    assert len(out.descriptions) == 1 and isinstance(out.descriptions[0], str) and out.descriptions[0]


def test_a_list_of_prompts_is_one_batch(pipe):
    prompts = ["a red circle", "a blue square", "a large green triangle in the top left"]
    out = draw(pipe, prompts)
    assert out.images.shape == (3, 32, 32, 3) and len(out.descriptions) == 3


def test_timings_cover_every_stage_and_add_up(pipe):
    timings = draw(pipe, ["a red circle", "a blue square"]).timings
    assert set(timings) == {*STAGES, "total"}
    assert all(value >= 0 for value in timings.values())
    assert timings["total"] == pytest.approx(sum(timings[s] for s in STAGES))
    assert timings["denoise"] > 0 and timings["llm_generate"] > 0


def test_without_the_llm_the_prompts_are_drawn_as_typed(pipe):
    out = draw(pipe, ["a red circle", "  a blue square. "], upsample=False)
    assert out.descriptions == ["a red circle", "a blue square"]  # checked prompts: stripped, full stop dropped
    assert out.timings["llm_generate"] == 0


def test_same_seed_same_images_and_descriptions(pipe):
    a, b = draw(pipe, ["a red circle", "a blue square"], seed=3), draw(pipe, ["a red circle", "a blue square"], seed=3)
    assert np.array_equal(a.images, b.images) and a.descriptions == b.descriptions
    c = draw(pipe, ["a red circle", "a blue square"], seed=4)
    assert not np.array_equal(a.images, c.images)


def test_one_generator_per_prompt(pipe):
    prompts = ["a red circle", "a blue square"]
    a = draw(pipe, prompts, generator=[seeded(1), seeded(2)], upsample=False)
    b = draw(pipe, prompts, generator=[seeded(1), seeded(2)], upsample=False)
    swapped = draw(pipe, prompts, generator=[seeded(2), seeded(1)], upsample=False)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, swapped.images)
    # Alone or in a batch, a prompt with the same generator starts from the same noise.
    alone = draw(pipe, prompts[1:], generator=[seeded(2)], upsample=False)
    np.testing.assert_allclose(alone.images[0], a.images[1], atol=1e-4)
    with pytest.raises(ValueError, match="got 1 generators for 2 prompts"):
        draw(pipe, prompts, generator=[seeded(1)])


def test_the_llm_on_or_off_starts_from_the_same_noise(pipe):
    """The LLM's seed is read from the generator without advancing it: the noise is the same either way."""
    noise = {}
    real = pipe.image_generator.prepare_latents

    def spy(n, generator, sched):
        latents = real(n, generator, sched)
        noise[len(noise)] = latents.clone()
        return latents

    pipe.image_generator.prepare_latents = spy
    try:
        for make in (lambda: seeded(9), lambda: [seeded(9), seeded(10)]):  # one for the batch, one per prompt
            for upsample in (True, False):
                draw(pipe, ["a red circle", "a cross"], generator=make(), upsample=upsample)
    finally:
        del pipe.image_generator.prepare_latents
    assert torch.equal(noise[0], noise[1]) and torch.equal(noise[2], noise[3])


def test_a_description_does_not_depend_on_its_batch(pipe):
    prompts = ["a red circle", "a cross and a square", "a small blue diamond"]
    together = draw(pipe, prompts, generator=[seeded(k) for k in range(3)])
    alone = [draw(pipe, [p], generator=[seeded(k)]) for k, p in enumerate(prompts)]
    assert together.descriptions == [a.descriptions[0] for a in alone]
    for k, a in enumerate(alone):
        np.testing.assert_allclose(together.images[k], a.images[0], atol=1e-4)


def test_stage_views_are_built_once_and_rebuilt_when_a_component_changes(pipe):
    views = pipe.text_encoder, pipe.writer, pipe.image_generator
    draw(pipe)
    assert (pipe.text_encoder, pipe.writer, pipe.image_generator) == views  # the same objects, call after call
    assert pipe.image_generator.text_encoder is pipe.text_encoder is pipe.writer.clip
    pipe.use_scheduler("ddim")
    assert pipe.image_generator is not views[2]
    assert pipe.image_generator.unet is pipe.unet  # views over the same components
    pipe.scheduler = pipe.scheduler  # setting a component, as diffusers lets you, rebuilds them too
    rebuilt = pipe.writer
    assert rebuilt is not views[1] and pipe.writer is rebuilt


def test_callback_on_step_end_runs_once_per_step_and_can_change_the_latents(pipe):
    calls = []

    def callback(p, i, t, kwargs):
        calls.append(i)
        assert p is pipe and set(kwargs) == {"latents"}
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 2 else kwargs

    out = pipe("a red circle", num_inference_steps=3, generator=seeded(0), output_type="np",
               callback_on_step_end=callback)
    assert calls == [0, 1, 2]
    assert np.allclose(out.images, 0.5)  # zero latents are mid-grey: the returned latents were used


@pytest.mark.parametrize("output_type, kind, shape", [("np", np.ndarray, (2, 32, 32, 3)),
                                                      ("pt", torch.Tensor, (2, 3, 32, 32))])
def test_array_outputs(pipe, output_type, kind, shape):
    images = pipe(["a red circle", "a blue square"], num_inference_steps=STEPS, generator=seeded(0),
                  output_type=output_type).images
    assert isinstance(images, kind) and tuple(images.shape) == shape
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_pil_output_matches_the_array(pipe):
    pil = pipe("a red circle", num_inference_steps=STEPS, generator=seeded(0), output_type="pil").images
    arr = draw(pipe, "a red circle").images
    assert len(pil) == 1 and np.array_equal(np.asarray(pil[0]), (arr[0] * 255).round().astype(np.uint8))


def test_return_dict_false_gives_a_tuple(pipe):
    images, descriptions, timings = pipe("a red circle", num_inference_steps=STEPS, generator=seeded(0),
                                         return_dict=False)
    assert len(images) == len(descriptions) == 1 and "total" in timings


# -- schedulers ---------------------------------------------------------------------------
def test_scheduler_swaps_with_from_config(pipe):
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert draw(pipe).images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_named_scheduler_draws(pipe, name):
    assert pipe.use_scheduler(name) is pipe
    assert type(pipe.scheduler).__name__ == SCHEDULERS[name]
    images = draw(pipe, upsample=False).images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()


def test_unknown_scheduler_names_the_choices(pipe):
    with pytest.raises(ValueError, match="unknown scheduler 'nope'") as err:
        pipe.use_scheduler("nope")
    assert all(name in str(err.value) for name in SCHEDULERS)


# -- saving and loading -----------------------------------------------------------------
def test_saved_pipeline_draws_the_same_images(pipe, saved):
    loaded = ShapesPipeline.from_pretrained(saved)
    prompts = ["a red circle", "a small blue square in the center"]
    a, b = draw(pipe, prompts, seed=7), draw(loaded, prompts, seed=7)
    assert a.descriptions == b.descriptions and np.array_equal(a.images, b.images)
    assert type(loaded.scheduler) is type(pipe.scheduler)


def test_model_index_names_the_llmimg_classes(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["shapes_pipeline", "ShapesPipeline"]  # the code file beside it, as on the hub
    assert index["clip"] == ["llmimg.pipelines.shapes", "ClipModel"]
    assert index["prefix_mapper"] == ["llmimg.stages.llm.model", "PrefixMapper"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert set(index["stage_configs"]) == {"clip", "llm", "generator"}


def test_saved_components_load_with_their_own_libraries(pipe, saved):
    from diffusers import UNet2DConditionModel
    from transformers import AutoModelForCausalLM

    unet = UNet2DConditionModel.from_pretrained(saved / "unet")
    llm = AutoModelForCausalLM.from_pretrained(saved / "llm")
    for loaded, original in ((unet, pipe.unet), (llm, pipe.llm)):
        ours = original.state_dict()
        assert all(torch.equal(value, ours[key]) for key, value in loaded.state_dict().items())


def test_missing_pipeline_folder(tmp_path):
    with pytest.raises(CheckpointError, match="'nowhere' does not exist"):
        ShapesPipeline.from_pretrained(tmp_path / "nowhere")


def test_truncated_weights_are_a_checkpoint_error(saved_copy):
    weights = saved_copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="'copy' is damaged") as err:
        ShapesPipeline.from_pretrained(saved_copy)
    assert "save_pretrained" in str(err.value)  # it says how to fix it


def test_folder_without_model_index_is_a_checkpoint_error(saved_copy):
    (saved_copy / "model_index.json").unlink()
    with pytest.raises(CheckpointError, match="has no model_index.json"):
        ShapesPipeline.from_pretrained(saved_copy)


def test_saving_keeps_the_users_files_and_refuses_a_folder_that_is_not_a_pipeline(pipe, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("notes")
    with pytest.raises(ValueError, match="not empty and holds no saved pipeline"):
        pipe.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["important.txt"]  # nothing written, nothing removed
    (mine / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')  # another model's folder
    (mine / "unet").mkdir()
    (mine / "unet" / "weights.safetensors").write_text("the user's UNet")
    with pytest.raises(ValueError, match="not empty and holds no saved pipeline"):
        pipe.save_pretrained(mine)
    assert (mine / "unet" / "weights.safetensors").read_text() == "the user's UNet"
    assert sorted(p.name for p in mine.iterdir()) == ["important.txt", "model_index.json", "unet"]
    target = tmp_path / "pipeline"
    pipe.save_pretrained(target)
    (target / "important.txt").write_text("notes")
    (target / "runs").mkdir()
    pipe.save_pretrained(target)  # saving again over the pipeline replaces only its own entries
    assert (target / "important.txt").read_text() == "notes" and (target / "runs").is_dir()
    assert ShapesPipeline.from_pretrained(target).config.stage_configs == pipe.config.stage_configs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "pipeline"]  # no temporary folder left


def test_failed_save_leaves_nothing_half_written(pipe, saved, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    target = tmp_path / "new"
    monkeypatch.setattr(pipe.unet, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        pipe.save_pretrained(target)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin
    # Saving over an existing pipeline that fails keeps the old one whole.
    before = sorted(p.relative_to(saved) for p in saved.rglob("*"))
    with pytest.raises(OSError, match="disk full"):
        pipe.save_pretrained(saved)
    assert sorted(p.relative_to(saved) for p in saved.rglob("*")) == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, error, message", [
    ("", EmptyPromptError, "the prompt is empty"),
    ("   \t\n", EmptyPromptError, "the prompt is empty"),
    (".", EmptyPromptError, "the prompt is empty"),
    ("a red circel zzz", UnknownWordsError, "unknown words 'circel', 'zzz'"),
    ("un cercle rouge é", UnknownWordsError, "'é'"),
    (" ".join(["red"] * 40), PromptTooLongError, "42 tokens"),
    (["a red circle", "a blue sqare"], UnknownWordsError, "unknown word 'sqare'"),
])
def test_bad_prompts_raise_prompt_errors(pipe, prompt, error, message):
    with pytest.raises(error, match=message):
        draw(pipe, prompt)


def test_unknown_words_list_the_vocabulary(pipe):
    with pytest.raises(UnknownWordsError) as err:
        draw(pipe, "a red circel")
    assert err.value.words == ["circel"] and "circle" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_inference_steps": 0}, "num_inference_steps must be a positive whole number, got 0"),
    ({"num_inference_steps": -1}, "num_inference_steps must be a positive whole number, got -1"),
    ({"num_inference_steps": 2.5}, "num_inference_steps must be a positive whole number"),
    ({"num_inference_steps": 1001}, "at most the 1000 training timesteps"),
    ({"guidance_scale": -1.0}, "guidance_scale must be a non-negative number"),
    ({"guidance_scale": math.nan}, "guidance_scale must be a non-negative number"),
    ({"guidance_scale": math.inf}, "guidance_scale must be a non-negative number"),
    ({"output_type": "latent"}, "output_type must be 'pil', 'np' or 'pt'"),
])
def test_bad_settings_raise_value_errors(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe("a red circle", **{"num_inference_steps": STEPS, **kwargs})


@pytest.mark.parametrize("generator, error, message", [
    (0, TypeError, "generator must be a torch.Generator, a list of them \\(one per prompt\\) or None, got int"),
    ([seeded(0), "1"], TypeError, "got a list holding other things"),
    ([seeded(0)], ValueError, "got 1 generators for 2 prompts"),
])
def test_a_wrong_generator_is_one_line_before_anything_runs(pipe, generator, error, message):
    with pytest.raises(error, match=message):
        draw(pipe, ["a red circle", "a square"], generator=generator)


def test_no_prompts(pipe):
    with pytest.raises(ValueError, match="no prompts given"):
        draw(pipe, [])


def test_a_prompt_at_the_context_limit_works(pipe):
    prompt = ("a small red circle in the top left and a large blue square in the top right and "
              "a small green cross in the center and a small white triangle")
    assert len(prompt.split()) == 30  # 30 words + <bos> + <eos> = the 32-token context
    assert draw(pipe, prompt, upsample=False).descriptions == [prompt]
    typed = prompt.replace("a small white triangle", "small white triangle cross")  # 30 words as typed
    with pytest.raises(PromptTooLongError, match="reads as 'a small red circle .* and a cross', 35 tokens"):
        draw(pipe, typed)  # read as the grammar, "a" and "and a" make it 33 words


# -- prompts as typed: read as the grammar, or refused with the reason (the upsampler's checker needs the grammar)
@pytest.mark.parametrize("typed, read", [
    ("A red circle, top-left!", "a red circle in the top left"),  # the README's example
    ("red circle", "a red circle"),  # no article
    ("the large square in top right", "a large square in the top right"),
    ("a red circle a blue square", "a red circle and a blue square"),
    ("an large circle", "a large circle"),
    ("Ａ ｒｅｄ ｃｉｒｃｌｅ！", "a red circle"),  # fullwidth letters and punctuation
    ("𝐚 𝐫𝐞𝐝 𝐜𝐢𝐫𝐜𝐥𝐞", "a red circle"),  # mathematical bold
    ("a red circle…", "a red circle"),  # an ellipsis
])
def test_prompts_as_typed_are_read_as_the_grammar(pipe, typed, read):
    assert pipe.check_inputs(typed, STEPS, 1.0) == [read]
    assert parse_prompt(read)  # what the checker judges descriptions against


@pytest.mark.parametrize("typed, reason", [
    ("red", "names no shape"),
    ("a red small circle", "'small' is out of place"),
    ("a circle top", "'top' cannot follow it"),
    ("a circle in the middle", "unknown position 'middle'"),
    ("a circle in the top left and a square in the top left", "two objects are in the top left"),
    ("circle and", "'and' at the end"),
])
def test_prompts_that_do_not_read_as_objects_are_refused_with_the_reason(pipe, typed, reason):
    with pytest.raises(UngrammaticalPromptError, match=reason) as err:
        draw(pipe, typed)
    assert "\n" not in str(err.value) and "cannot be read as ShapesWorld objects" in str(err.value)


def test_the_output_says_whether_each_description_is_faithful(pipe):
    from llmimg.core.data import faithful

    out = draw(pipe, ["a red circle", "a blue square in the center"])
    assert out.faithful == [faithful(p, d) for p, d in zip(["a red circle", "a blue square in the center"],
                                                           out.descriptions)]
    assert draw(pipe, "a red circle", upsample=False).faithful is None  # nothing was written to check


# -- random text ----------------------------------------------------------------------------
WORDS = sorted({"a", "an", "and", "in", "the", *SHAPES, *COLOUR_NAMES, *SIZES,
                *(w for p in POSITIONS for w in p.split())})
NEAR_MISSES = ["circel", "Red", "RED", "squares", "é", "<unk>", "<pad>", "<eos>", ".", ",", "!", "🙂", "ｒｅｄ"]
SPACES = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", ""])
vocabulary_text = st.lists(st.tuples(st.sampled_from(WORDS + NEAR_MISSES), SPACES), max_size=40).map(
    lambda pairs: "".join(w + s for w, s in pairs))
any_text = st.one_of(st.text(), st.text(alphabet=st.characters(categories=["Zs", "Cc", "Mn", "So"])),
                     vocabulary_text, st.lists(st.sampled_from(WORDS), min_size=1, max_size=40).map(" ".join))


@settings(max_examples=50, deadline=None)
@given(text=any_text)
def test_any_text_is_accepted_or_refused_with_a_prompt_error(smoke_pipeline, text):
    from llmimg.core.text import CONTEXT_LENGTH, UNK_ID

    try:
        (checked,) = smoke_pipeline.check_inputs(text, 1, 1.0)
    except PromptError as err:
        assert str(err) and "\n" not in str(err)  # a one-line message a CLI can print
        return
    # Accepted: it has words, all of them known, it fits the context, and it is in the grammar, so that
    # the upsampler's checker can judge what the LLM writes for it.
    ids = smoke_pipeline.tokenizer(checked)["input_ids"]
    assert checked and 2 < len(ids) <= CONTEXT_LENGTH and UNK_ID not in ids
    assert parse_prompt(checked)


@settings(max_examples=5, deadline=None)
@given(text=vocabulary_text)
def test_vocabulary_text_draws_or_raises_a_prompt_error(smoke_pipeline, text):
    try:
        out = smoke_pipeline(text, num_inference_steps=1, generator=seeded(0), output_type="np")
    except PromptError:
        return
    assert out.images.shape == (1, 32, 32, 3) and len(out.descriptions) == 1


# -- valid prompts ------------------------------------------------------------------------------
def _distinct_positions(objects) -> bool:
    stated = [o.position for o in objects if o.position is not None]
    return len(set(stated)) == len(stated)


# Prompts in ShapesWorld's grammar: one or two objects, each a shape with any of colour, size, position.
grammar_prompts = st.lists(
    st.builds(PartialObject, st.sampled_from(SHAPES), st.none() | st.sampled_from(COLOUR_NAMES),
              st.none() | st.sampled_from(SIZES), st.none() | st.sampled_from(POSITIONS)),
    min_size=1, max_size=2).filter(_distinct_positions).map(format_prompt)


def test_the_worlds_prompts_and_descriptions_are_accepted_as_typed(smoke_pipeline):
    samples = list(ShapesWorld(seed=2).samples(100, "val")) + list(ShapesWorld(seed=2).samples(50, "heldout"))
    for texts in ([s.prompt for s in samples], [s.description for s in samples]):
        assert smoke_pipeline.check_inputs(texts, 1, 1.0) == texts


@settings(max_examples=50)
@given(prompt=grammar_prompts)
def test_every_prompt_of_the_grammar_is_accepted_as_typed(smoke_pipeline, prompt):
    assert parse_prompt(prompt)  # the strategy writes the grammar
    assert smoke_pipeline.check_inputs(prompt, 1, 1.0) == [prompt]


@settings(max_examples=100)
@given(text=st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join))
def test_vocabulary_words_are_read_as_the_grammar_or_refused_with_the_reason(smoke_pipeline, text):
    try:
        (checked,) = smoke_pipeline.check_inputs(text, 1, 1.0)
    except (UngrammaticalPromptError, PromptTooLongError) as err:
        assert "\n" not in str(err)
        return
    objects = parse_prompt(checked)
    # Nothing is made up: the objects read are the words' own shapes, colours and sizes, in order.
    assert [o.shape for o in objects] == [w for w in text.split() if w in SHAPES]
    assert [o.colour for o in objects if o.colour] == [w for w in text.split() if w in COLOUR_NAMES]


@settings(max_examples=5)
@given(prompt=grammar_prompts)
def test_every_prompt_of_the_grammar_draws(smoke_pipeline, prompt):
    out = smoke_pipeline(prompt, num_inference_steps=1, generator=seeded(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3) and len(out.descriptions) == 1


def test_the_stage_timer_waits_for_the_gpu_before_each_clock(monkeypatch):
    from llmimg.pipelines.common import StageTimer

    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(str(device)))
    timer = StageTimer("cuda")
    with timer.stage("denoise"):
        pass
    assert synced == ["cuda", "cuda"]  # before the clock starts and before it stops
    with StageTimer("cpu").stage("denoise"):
        pass
    assert len(synced) == 2
    with pytest.raises(ValueError, match="unknown stage 'paint'"):
        with timer.stage("paint"):
            pass


def test_a_call_leaves_the_global_random_state_alone(pipe):
    state = torch.get_rng_state()
    draw(pipe, ["a red circle", "a cross"])  # seeded
    pipe("a red circle", num_inference_steps=STEPS, output_type="np")  # no generator: fresh randomness, not torch's
    assert torch.equal(torch.get_rng_state(), state)
