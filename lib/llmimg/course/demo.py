"""An interactive demo of the whole pipeline: type a prompt, set the sampler, see the image and where the time went.

In a notebook::

    from llmimg.course.demo import Demo
    from llmimg.pipelines import shapes

    Demo(shapes.get()).widget()

The controls are a prompt box, sliders for the denoising steps and the guidance scale,
the sampler, a switch for the LLM's description and the seed; the Generate button shows
the text the UNet drew (the LLM's description, or the prompt itself), the image enlarged
with sharp pixels, and one bar split into the four stages' milliseconds.

Everything the button does goes through :meth:`Demo.run`, which needs no browser:
scripts and tests call it directly and get a :class:`DemoResult`. Bad input never
raises there; it comes back as ``DemoResult.error``, the one-line message the UI shows
in red.

The widgets are those of ipywidgets 7.7 (Colab's) and 8 alike: ``make test`` runs
tests/test_demo.py under 8, ``make test-colab`` under Colab's 7.7.1.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from llmimg.pipelines.common import STAGES
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS
from llmimg.stages.generator import SCHEDULERS

if TYPE_CHECKING:
    import ipywidgets as widgets

    from llmimg.pipelines.shapes import ShapesPipeline

PREVIEW_SIZE = 192  # pixels on screen for the 32×32 image: 6× each way, nearest-neighbour so pixels stay square
STAGE_COLOURS = dict(zip(STAGES, ("#4c72b0", "#dd8452", "#55a868", "#8172b3")))
MAX_STEPS, MAX_GUIDANCE = 50, 8.0  # slider ranges: more steps or guidance change little at 32×32
EXAMPLE_PROMPT = "a red circle"


@dataclass
class DemoResult:
    """What one generation gave: the text the UNet drew, the image and the stage timings, or why it failed.

    ``description``: the LLM's description of ``prompt`` (or the prompt itself without
    the LLM); ``image``: the 32×32 PIL image; ``timings``: milliseconds per stage and
    ``total``; ``error``: None, or a one-line message (then there is no image);
    ``use_llm``: whether the LLM wrote the description.
    """

    prompt: str
    description: str | None = None
    image: Image.Image | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    use_llm: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


def png_bytes(image: Image.Image, size: int = PREVIEW_SIZE) -> bytes:
    """``image`` enlarged to ``size`` pixels square with nearest-neighbour (sharp pixels), as PNG bytes."""
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def timing_chart(timings: dict[str, float]) -> bytes:
    """One horizontal bar split into the pipeline's stages, each labelled with its milliseconds, as PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: a figure of its own, nothing global to clean up

    fig = Figure(figsize=(6.4, 1.2), dpi=100)
    ax = fig.add_subplot()
    total = sum(timings.get(stage, 0.0) for stage in STAGES)
    left = 0.0
    for stage in STAGES:
        ms = timings.get(stage, 0.0)
        ax.barh(0, ms, left=left, height=0.6, color=STAGE_COLOURS[stage], label=f"{stage} {ms:.1f} ms")
        if total > 0 and ms > 0.08 * total:  # only where the number fits inside its segment
            ax.text(left + ms / 2, 0, f"{ms:.0f}", ha="center", va="center", color="white", fontsize=9)
        left += ms
    ax.set_xlim(0, total if total > 0 else 1.0)
    ax.set_yticks([])
    ax.set_xlabel("milliseconds")
    ax.set_title(f"time per stage, {total:.1f} ms in all", fontsize=10)
    ax.legend(ncol=4, fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.5))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


class Demo:
    """The pipeline behind a small UI: :meth:`run` does one generation, :meth:`widget` builds the controls.

    The demo owns the pipeline's sampler: each run switches it to the one asked for.
    After :meth:`widget`, its widgets are attributes (``prompt_box``, ``steps_slider``,
    ``guidance_slider``, ``scheduler_menu``, ``llm_checkbox``, ``seed_box``, ``button``,
    ``description``, ``image``, ``timing_bar``, ``message``), so code can set values
    and call ``button.click()``.
    """

    prompt_box: widgets.Text
    steps_slider: widgets.IntSlider
    guidance_slider: widgets.FloatSlider
    scheduler_menu: widgets.Dropdown
    llm_checkbox: widgets.Checkbox
    seed_box: widgets.IntText
    button: widgets.Button
    description: widgets.HTML
    image: widgets.Image
    timing_bar: widgets.Image
    message: widgets.HTML

    def __init__(self, pipe: ShapesPipeline) -> None:
        self.pipe = pipe
        self.last: DemoResult | None = None  # the latest result the UI showed
        self._ui: widgets.VBox | None = None

    @property
    def default_guidance(self) -> float:
        """The guidance scale the generator was trained to use by default."""
        return float(self.pipe.config.stage_configs["generator"]["guidance_scale"])

    # -- the logic, no browser needed -------------------------------------------------
    def run(self, prompt: str, steps: int = DEFAULT_STEPS, guidance: float | None = None,
            scheduler: str = DEFAULT_SCHEDULER, use_llm: bool = True, seed: int = 0) -> DemoResult:
        """Draw ``prompt`` once; bad input (prompt, steps, guidance, sampler, seed) gives ``error``, never an exception.

        ``guidance`` None is the model's default; ``use_llm=False`` draws the prompt
        itself; ``seed`` fixes the LLM's sampling and the noise, so a run repeats exactly.
        """
        import torch

        try:
            if not isinstance(prompt, str):
                raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"the seed must be a non-negative whole number, got {seed!r}")
            self.pipe.use_scheduler(scheduler)
            out = self.pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,
                            generator=torch.Generator().manual_seed(seed), upsample=use_llm)
        except ValueError as err:  # PromptError is one: empty, unknown words, too long
            return DemoResult(prompt=prompt, error=_one_line(err), use_llm=use_llm)
        return DemoResult(prompt=prompt, description=out.descriptions[0], image=out.images[0], timings=out.timings,
                          use_llm=use_llm)

    # -- the UI -----------------------------------------------------------------------
    def widget(self) -> widgets.VBox:
        """The ipywidgets UI (built once): controls, Generate button, then message, description, image and timings."""
        import ipywidgets as widgets

        if self._ui is not None:
            return self._ui
        wide = widgets.Layout(width="420px")
        self.prompt_box = widgets.Text(value=EXAMPLE_PROMPT, description="Prompt", layout=wide,
                                       placeholder="e.g. a small blue square in the top left")
        self.steps_slider = widgets.IntSlider(value=DEFAULT_STEPS, min=1, max=MAX_STEPS, description="Steps")
        self.guidance_slider = widgets.FloatSlider(value=min(self.default_guidance, MAX_GUIDANCE), min=0.0,
                                                   max=MAX_GUIDANCE, step=0.25, description="Guidance")
        self.scheduler_menu = widgets.Dropdown(options=list(SCHEDULERS), value=DEFAULT_SCHEDULER,
                                               description="Sampler")
        self.llm_checkbox = widgets.Checkbox(value=True, description="Use the LLM", indent=False)
        self.seed_box = widgets.IntText(value=0, description="Seed", layout=widgets.Layout(width="160px"))
        self.button = widgets.Button(description="Generate", button_style="primary", icon="paint-brush")
        self.message = widgets.HTML()
        self.description = widgets.HTML()
        self.image = widgets.Image(format="png", width=PREVIEW_SIZE, height=PREVIEW_SIZE)
        self.timing_bar = widgets.Image(format="png")
        self.button.on_click(lambda _: self.generate())
        controls = widgets.VBox([
            self.prompt_box,
            widgets.HBox([self.steps_slider, self.guidance_slider]),
            widgets.HBox([self.scheduler_menu, self.seed_box, self.llm_checkbox]),
            self.button,
        ])
        results = widgets.VBox([self.message, self.description, widgets.HBox([self.image, self.timing_bar])])
        self._ui = widgets.VBox([controls, results])
        return self._ui

    def generate(self) -> DemoResult:
        """Run with the values the controls show and display the outcome: what the Generate button does."""
        self.widget()
        self.button.disabled = True  # one generation at a time
        try:
            result = self.run(self.prompt_box.value, steps=self.steps_slider.value,
                              guidance=self.guidance_slider.value, scheduler=self.scheduler_menu.value,
                              use_llm=self.llm_checkbox.value, seed=self.seed_box.value)
        except Exception as err:  # an exception in a click handler would vanish into the kernel's log
            result = DemoResult(prompt=self.prompt_box.value, error=f"{type(err).__name__}: {_one_line(err)}")
        finally:
            self.button.disabled = False
        self.show(result)
        return result

    def show(self, result: DemoResult) -> None:
        """Put ``result`` on screen; an error only replaces the message, so the last good image stays."""
        self.widget()
        self.last = result
        if not result.ok:
            self.message.value = f'<span style="color: #c0392b"><b>Error:</b> {html.escape(result.error)}</span>'
            return
        what = "the LLM's description" if result.use_llm else "the prompt, drawn as typed"
        self.message.value = ""
        self.description.value = f"<b>{html.escape(result.description)}</b> <i>({what})</i>"
        self.image.value = png_bytes(result.image)
        self.timing_bar.value = timing_chart(result.timings)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = ["PREVIEW_SIZE", "Demo", "DemoResult", "png_bytes", "timing_chart"]
