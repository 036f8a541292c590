"""The interactive demo: its logic without a browser, and its widgets driven from code."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from llmimg.course.demo import PREVIEW_SIZE, Demo, DemoResult, png_bytes, timing_chart
from llmimg.stages.generator import SCHEDULERS
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS, STAGES

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes | memoryview) -> tuple[int, int]:
    """The size of a PNG (ipywidgets.Image gives its value as a memoryview)."""
    data = bytes(data)
    assert data.startswith(PNG)
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.fixture
def demo(smoke_pipeline):
    """A demo of the session's pipeline; it switches samplers, so the default is set back afterwards."""
    yield Demo(smoke_pipeline)
    smoke_pipeline.use_scheduler(DEFAULT_SCHEDULER)


def test_run_draws_a_prompt(demo):
    result = demo.run("a red circle", steps=2, seed=1)
    assert isinstance(result, DemoResult) and result.ok and result.error is None
    assert result.image.size == (32, 32) and result.description and result.use_llm
    assert set(result.timings) == {*STAGES, "total"}


def test_run_repeats_with_the_same_seed(demo):
    a, b = demo.run("a red circle", steps=2, seed=4), demo.run("a red circle", steps=2, seed=4)
    assert a.description == b.description and a.image.tobytes() == b.image.tobytes()


def test_run_without_the_llm_draws_the_prompt(demo):
    result = demo.run(" a blue square ", steps=2, scheduler="euler", guidance=0.0, use_llm=False)
    assert result.ok and result.description == "a blue square" and result.timings["llm_generate"] == 0
    assert type(demo.pipe.scheduler).__name__ == SCHEDULERS["euler"]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": ""}, "the prompt is empty"),
    ({"prompt": "   "}, "the prompt is empty"),
    ({"prompt": "a red circel"}, "unknown word 'circel'"),
    ({"prompt": "un cercle rouge é"}, "unknown words"),
    ({"prompt": " ".join(["red"] * 40)}, "42 tokens"),
    ({"steps": 0}, "num_inference_steps must be a positive whole number"),
    ({"guidance": -1.0}, "guidance_scale must be a non-negative number"),
    ({"scheduler": "nope"}, "unknown scheduler 'nope'"),
    ({"seed": -1}, "the seed must be a non-negative whole number"),
    ({"prompt": ["a red circle"]}, "the prompt must be text"),
])
def test_run_turns_bad_input_into_a_message(demo, kwargs, message):
    result = demo.run(**{"prompt": "a red circle", "steps": 2, **kwargs})
    assert not result.ok and result.image is None and result.description is None
    assert message in result.error and "\n" not in result.error


def test_helpers_make_pngs():
    image = Image.new("RGB", (32, 32), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))
    big = Image.open(io.BytesIO(png_bytes(image)))
    assert big.size == (PREVIEW_SIZE, PREVIEW_SIZE)
    assert big.getpixel((5, 5)) == (0, 0, 255) and big.getpixel((6, 6)) == (255, 0, 0)  # sharp 6×6 pixels
    width, height = png_size(timing_chart({"clip_encode": 5.0, "llm_generate": 20.0, "denoise": 70.0,
                                           "postprocess": 1.0, "total": 96.0}))
    assert width > 2 * height  # a wide bar, not a square plot
    assert png_size(timing_chart(dict.fromkeys(STAGES, 0.0)))  # nothing timed yet still draws


def test_widget_controls(demo):
    ui = demo.widget()
    assert demo.widget() is ui  # built once
    assert (demo.steps_slider.min, demo.steps_slider.max, demo.steps_slider.value) == (1, 50, DEFAULT_STEPS)
    assert (demo.guidance_slider.min, demo.guidance_slider.max) == (0.0, 8.0)
    assert demo.guidance_slider.value == demo.default_guidance == 3.0
    assert list(demo.scheduler_menu.options) == list(SCHEDULERS) and demo.scheduler_menu.value == DEFAULT_SCHEDULER
    assert demo.llm_checkbox.value is True and demo.llm_checkbox.description == "Use the LLM"
    assert demo.seed_box.value == 0 and demo.button.description == "Generate"
    assert demo.image.value == b"" and demo.timing_bar.value == b"" and demo.message.value == ""


def test_clicking_generate_shows_the_result_and_errors_keep_the_image(demo):
    demo.widget()
    demo.prompt_box.value = "a blue square"
    demo.steps_slider.value, demo.guidance_slider.value = 2, 2.0
    demo.scheduler_menu.value, demo.llm_checkbox.value, demo.seed_box.value = "ddim", False, 3
    demo.button.click()
    assert demo.message.value == "" and "a blue square" in demo.description.value
    assert "drawn as typed" in demo.description.value
    assert png_size(demo.image.value) == (PREVIEW_SIZE, PREVIEW_SIZE) and png_size(demo.timing_bar.value)
    # The button drew exactly what run() draws with the same settings.
    expected = demo.run("a blue square", steps=2, guidance=2.0, scheduler="ddim", use_llm=False, seed=3)
    assert demo.image.value == png_bytes(expected.image) and not demo.button.disabled

    image, description, bar = demo.image.value, demo.description.value, demo.timing_bar.value
    demo.prompt_box.value = "a blue sqare"
    demo.button.click()
    assert "unknown word &#x27;sqare&#x27;" in demo.message.value and "color" in demo.message.value
    assert (demo.image.value, demo.description.value, demo.timing_bar.value) == (image, description, bar)
    assert demo.last.error and not demo.button.disabled

    demo.prompt_box.value, demo.llm_checkbox.value = "a red circle", True
    demo.button.click()
    assert demo.message.value == "" and "(the LLM's description)" in demo.description.value
    assert demo.image.value != image


def test_an_unexpected_failure_shows_as_a_message(demo, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("out of memory\nmore details")

    demo.widget()
    monkeypatch.setattr(demo, "run", crash)
    result = demo.generate()
    assert result.error == "RuntimeError: out of memory" and "out of memory" in demo.message.value
    assert not demo.button.disabled
