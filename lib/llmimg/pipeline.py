"""The whole LLM-guided text-to-image pipeline as one ``diffusers.DiffusionPipeline``.

A prompt goes through three trained stages::

    prompt ──CLIP text tower──▶ embedding ──prefix mapper + GPT-2──▶ description
           ──CLIP token states──▶ UNet denoising loop (scheduler) ──▶ 32×32 image

:class:`ShapesPipeline` holds the components the way Stable Diffusion's pipeline does
(``clip``, ``tokenizer``, ``llm``, ``prefix_mapper``, ``unet``, ``scheduler``), so it
saves and loads with ``save_pretrained`` / ``from_pretrained``, its scheduler swaps
with ``from_config``, and calling it follows diffusers' signature
(``num_inference_steps``, ``guidance_scale``, ``generator``, ``output_type``,
``callback_on_step_end``). Each call also reports how long every stage took.

A saved folder also loads with diffusers' generic loader,
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, the way custom
pipelines on the Hugging Face hub do: the folder holds a code file
(:data:`CODE_FILE`) that ``model_index.json`` names as ``[module, class]``.

The denoising loop and the LLM's decoding are the ones of :mod:`llmimg.generator` and
:mod:`llmimg.llm`: the pipeline is a packaging of the stages, not a second copy.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput

from llmimg import clip as clip_stage
from llmimg import generator as gen_stage
from llmimg import llm as llm_stage
from llmimg.checkpoints import CheckpointError, atomic_directory
from llmimg.config import Profile, get_profile
from llmimg.text import CONTEXT_LENGTH, check_prompt

STAGES = ("clip_encode", "llm_generate", "denoise", "postprocess")
DEFAULT_STEPS = 10  # the fast setting: DPM-Solver++ at 10 steps (``make bench`` compares it with DDPM at 1000)
DEFAULT_SCHEDULER = "dpm++"
RETRAIN = "save it again with ShapesPipeline.save_pretrained, or rebuild it with llmimg.pipeline.get()"
# The hub's convention for a custom pipeline: model_index.json names [module, class] and the
# module's file lies in the folder, so DiffusionPipeline.from_pretrained can import the class.
CODE_MODULE = "shapes_pipeline"
CODE_FILE = f"{CODE_MODULE}.py"
CODE = '''"""ShapesPipeline for diffusers: DiffusionPipeline.from_pretrained(folder, trust_remote_code=True).

The class comes from the installed llmimg package; this file only names it.
"""

from llmimg.pipeline import ShapesPipeline

__all__ = ["ShapesPipeline"]
'''


class ClipModel(ModelMixin, ConfigMixin):
    """An open_clip ``CLIP`` (built from its model config) as a diffusers model, so a pipeline can save it.

    ``self.model`` is the plain ``open_clip.CLIP``; the weights are its state dict under
    the ``model.`` prefix in ``diffusion_pytorch_model.safetensors``.
    """

    @register_to_config
    def __init__(self, model_cfg: dict[str, Any]) -> None:
        import open_clip

        super().__init__()
        self.model = open_clip.CLIP(**model_cfg)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text, normalize=True)


@dataclass
class ShapesPipelineOutput(BaseOutput):
    """What a pipeline call returns.

    ``images``: PIL images, a ``(B, 32, 32, 3)`` float array in [0, 1] (``"np"``) or a
    ``(B, 3, 32, 32)`` tensor (``"pt"``); ``descriptions``: the texts the generator drew
    (the LLM's, or the prompts themselves with ``upsample=False``); ``timings``:
    milliseconds per stage (:data:`STAGES`) and ``total``, for the whole batch.
    """

    images: Any
    descriptions: list[str]
    timings: dict[str, float]


def prompt_list(prompt: str | Sequence[str]) -> list[str]:
    """A pipeline's ``prompt`` argument as a non-empty list of strings (a ValueError or TypeError if it is not one)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompts given: pass a prompt or a list with at least one prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("every prompt must be a string")
    return prompts


@contextmanager
def no_loading_bars() -> Iterator[None]:
    """Hide transformers' and diffusers' loading bars for the block, then restore them as they were."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in enabled:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, was in enabled:
            if was:
                lib.enable_progress_bar()


def check_outputs(output_type: str, generator: Any, n_prompts: int) -> None:
    """Refuse an unknown ``output_type``, or a list of generators that is not one per prompt, before any work."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
    if isinstance(generator, list) and len(generator) != n_prompts:
        raise ValueError(f"got {len(generator)} generators for {n_prompts} prompts")


class StageTimer:
    """Wall-clock milliseconds per stage; a stage timed twice adds up."""

    def __init__(self) -> None:
        self.ms = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t0) * 1000.0

    def result(self) -> dict[str, float]:
        return {**self.ms, "total": sum(self.ms.values())}


class ShapesPipeline(DiffusionPipeline):
    """Prompt → CLIP → LLM description → UNet: LLM-guided text-to-image generation in one object.

    Build it from the trained stages with :func:`get` (the profile's cached models) or
    :meth:`from_stages`; load a saved one with ``ShapesPipeline.from_pretrained(dir)``.
    ``stage_configs`` records the configurations the three stages were trained with.
    """

    model_cpu_offload_seq = "clip->llm->unet"

    def __init__(self, clip: ClipModel, tokenizer: Any, llm: Any, prefix_mapper: llm_stage.PrefixMapper,
                 unet: Any, scheduler: Any, stage_configs: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.register_modules(clip=clip, tokenizer=tokenizer, llm=llm, prefix_mapper=prefix_mapper, unet=unet,
                              scheduler=scheduler)
        self.register_to_config(stage_configs=stage_configs or {})

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_stages(cls, llm: llm_stage.ShapesLLM, generator: gen_stage.ShapesGenerator,
                    scheduler: str = DEFAULT_SCHEDULER) -> ShapesPipeline:
        """A pipeline of a trained LLM (with its CLIP) and a generator trained on that CLIP's token states."""
        text = llm.clip
        trained_on = getattr(generator.text_encoder, "path", None)
        if trained_on is not None and text.path is not None and Path(trained_on).name != Path(text.path).name:
            raise ValueError(f"the generator was trained on the CLIP {Path(trained_on).name!r}, "
                             f"the LLM on {Path(text.path).name!r}")
        wrapped = ClipModel(clip_stage.model_config(text.config.model_name))
        wrapped.model.load_state_dict(text.model.state_dict())
        return cls(clip=wrapped.eval(), tokenizer=llm.tokenizer, llm=llm.lm.gpt2, prefix_mapper=llm.lm.mapper,
                   unet=generator.unet, scheduler=gen_stage.make_scheduler(scheduler, generator.scheduler.config),
                   stage_configs={"clip": text.config.as_dict(), "llm": llm.config.as_dict(),
                                  "generator": generator.config.as_dict()})

    @property
    def text_encoder(self) -> clip_stage.ShapesCLIP:
        """The CLIP with its tokenizer, as the stages use it."""
        return clip_stage.ShapesCLIP(self.clip.model, self.tokenizer,
                                     clip_stage.ClipConfig.from_dict(self.config.stage_configs["clip"]))

    @property
    def writer(self) -> llm_stage.ShapesLLM:
        """The LLM stage (GPT-2 and prefix mapper on this pipeline's CLIP)."""
        return llm_stage.ShapesLLM(llm_stage.ClipCapLM(self.llm, self.prefix_mapper), self.tokenizer,
                                   self.text_encoder,
                                   llm_stage.LLMConfig.from_dict({"read_context": False,
                                                                  **self.config.stage_configs["llm"]}))

    @property
    def generator_stage(self) -> gen_stage.ShapesGenerator:
        """The generator stage (UNet and DDPM training scheduler on this pipeline's CLIP)."""
        from diffusers import DDPMScheduler

        config = gen_stage.GeneratorConfig.from_dict(self.config.stage_configs["generator"])
        return gen_stage.ShapesGenerator(self.unet, DDPMScheduler.from_config(self.scheduler.config),
                                         self.text_encoder, config, device=self.device)

    def use_scheduler(self, name: str) -> ShapesPipeline:
        """Swap the sampler by name (one of ``llmimg.generator.SCHEDULERS``) with ``from_config``; returns self."""
        self.scheduler = gen_stage.make_scheduler(name, self.scheduler.config)
        return self

    def use_generator(self, generator: gen_stage.ShapesGenerator, scheduler: str = "ddim") -> ShapesPipeline:
        """Swap in another generator on the same CLIP (e.g. a distilled one, :mod:`llmimg.distillation`); returns self.

        Its UNet, its config (so its default guidance scale) and the sampler ``scheduler``
        replace the current ones; call with the step count it was trained for.
        """
        if generator.unet.config.cross_attention_dim != self.unet.config.cross_attention_dim:
            raise ValueError("this generator reads text states of another width: it was trained on another CLIP")
        self.register_modules(unet=generator.unet.to(self.device),
                              scheduler=gen_stage.make_scheduler(scheduler, generator.scheduler.config))
        self.register_to_config(stage_configs={**self.config.stage_configs, "generator": generator.config.as_dict()})
        return self

    # -- saving and loading -----------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained`` plus :data:`CODE_FILE`, written into a temporary folder first.

        A crash leaves nothing half-written. ``model_index.json`` names the class as
        ``[CODE_MODULE, "ShapesPipeline"]`` so that diffusers' generic loader finds it.
        """
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, safe_serialization=True, **kwargs)
            (tmp / CODE_FILE).write_text(CODE)
            index_file = tmp / "model_index.json"
            index = json.loads(index_file.read_text())
            index["_class_name"] = [CODE_MODULE, "ShapesPipeline"]
            index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")  # as diffusers writes it

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> Any:
        """diffusers' ``load_config``; a folder's ``[CODE_MODULE, "ShapesPipeline"]`` reads as this class.

        ``ShapesPipeline.from_pretrained`` knows the class already, so it does not run the
        folder's code file and needs no ``trust_remote_code``.
        """
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if config.get("_class_name") == [CODE_MODULE, "ShapesPipeline"]:
            config["_class_name"] = "ShapesPipeline"
        return loaded

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> ShapesPipeline:
        """Load a folder written by :meth:`save_pretrained` (never from the hub); damage raises CheckpointError."""
        path = Path(pretrained_model_name_or_path)
        if not (path / "model_index.json").is_file():
            what = "does not exist" if not path.exists() else "has no model_index.json"
            raise CheckpointError(f"the pipeline folder {path.name!r} {what}; {RETRAIN}")
        try:
            with no_loading_bars():  # six small components load in milliseconds: no bar needed
                pipe = super().from_pretrained(path, local_files_only=True, **kwargs)
        except Exception as err:  # JSON, safetensors and shape errors all mean a damaged folder
            raise CheckpointError(f"the pipeline folder {path.name!r} is damaged ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}); {RETRAIN}") from err
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- generation -------------------------------------------------------------------
    def check_inputs(self, prompt: str | list[str], num_inference_steps: int, guidance_scale: float) -> list[str]:
        """The prompts as a checked list; bad values raise ValueError (prompts: :class:`~llmimg.text.PromptError`)."""
        prompts = prompt_list(prompt)
        gen_stage.check_sampling(num_inference_steps, guidance_scale, self.scheduler.config.num_train_timesteps)
        return [check_prompt(self.tokenizer, p) for p in prompts]

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                 guidance_scale: float | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                 upsample: bool = True, output_type: str = "pil", return_dict: bool = True,
                 do_sample: bool = True, temperature: float = 1.0,
                 callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
                 guidance_end: float = 1.0) -> ShapesPipelineOutput | tuple:
        """Draw one image per prompt.

        ``upsample=True`` lets the LLM write a full description of each prompt (sampled
        with ``temperature`` and redrawn when it contradicts the prompt, or greedy with
        ``do_sample=False``; see :meth:`llmimg.llm.ShapesLLM.upsample_from`) and draws that;
        ``upsample=False`` draws the prompt itself. ``guidance_scale`` (None: the
        generator's trained default) turns on classifier-free guidance above 1, on the
        first ``guidance_end`` share of the steps (1: all of them).
        ``generator`` seeds everything random: the LLM's sampling and the initial noise
        (one generator for the batch, or one per prompt as in diffusers). The noise of
        prompt k depends only on its generator; the LLM samples the whole batch from one
        seed drawn from the first generator, so with ``upsample=True`` a description
        depends on the batch it is written in (one prompt per call makes it depend on
        that prompt's generator alone, as ``llmimg generate`` does). Prompts are
        checked first: empty, too long or with words outside the vocabulary raise
        :class:`~llmimg.text.PromptError` naming the problem.
        """
        gen = self.generator_stage
        guidance_scale = gen.config.guidance_scale if guidance_scale is None else guidance_scale
        prompts = self.check_inputs(prompt, num_inference_steps, guidance_scale)
        check_outputs(output_type, generator, len(prompts))
        timer, text = StageTimer(), gen.text_encoder
        if upsample:
            first = generator[0] if isinstance(generator, list) else generator
            seed = None if first is None else int(torch.randint(2**31 - 1, (1,), generator=first))
            with timer.stage("clip_encode"):
                z = text.encode_text(prompts, check=False)
            # fork_rng: the LLM samples from torch's global generator; the caller's stream stays untouched.
            with timer.stage("llm_generate"), torch.random.fork_rng(devices=[]):
                written = self.writer.upsample_from(z, prompts, do_sample=do_sample, temperature=temperature, seed=seed,
                                                    max_new_tokens=CONTEXT_LENGTH - 2)
            # An empty output would mean "no condition" to the generator: keep the prompt instead.
            descriptions = [d or p for d, p in zip(written, prompts)]
        else:
            descriptions = prompts
        with timer.stage("clip_encode"):
            states, mask = gen.text_states(descriptions, check=False)
            uncond = tuple(x[:1] for x in gen.text_states([""], check=False))

        on_step = None
        if callback_on_step_end is not None:
            def on_step(i: int, t: Any, latents: torch.Tensor) -> torch.Tensor:
                out = callback_on_step_end(self, i, t, {"latents": latents})
                return out.get("latents", latents)

        with timer.stage("denoise"):
            latents, _ = gen.denoise(states, mask, uncond, num_inference_steps, guidance_scale, self.scheduler,
                                      generator, on_step=on_step, guidance_end=guidance_end)
        with timer.stage("postprocess"):
            images = gen_stage.to_images(latents.float().cpu(), gen.config.unshuffle)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, descriptions, timer.result()
        return ShapesPipelineOutput(images=images, descriptions=descriptions, timings=timer.result())


def get(profile: str | Profile | None = None, *, progress: bool = True, scheduler: str = DEFAULT_SCHEDULER,
        device: str | torch.device | None = None) -> ShapesPipeline:
    """The profile's pipeline from its cached CLIP, LLM and generator (each trained first if missing)."""
    profile = get_profile(profile)
    llm = llm_stage.get(profile, progress=progress)
    generator = gen_stage.get(profile, progress=progress)
    pipe = ShapesPipeline.from_stages(llm, generator, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def evaluate(pipe: ShapesPipeline, n: int = 500, *, seed: int = 0, num_inference_steps: int = 25,
             guidance_scale: float | None = None, scheduler: str = DEFAULT_SCHEDULER) -> dict[str, Any]:
    """The metrics of ``llmimg eval pipeline``: ShapesEval of typed prompts drawn with and without the LLM.

    ``n`` typed prompts (1–2 objects) of the ``val`` split and ``n`` of the ``heldout``
    split (colour–shape pairs no stage saw in training) are drawn twice from the same
    noise: straight from the prompt (``*_raw``, the LLM off) and from the LLM's
    description of it (``*_upsampled``). Images are scored against the *prompt*, so an
    upsampled description that contradicts it counts as wrong. Each rate has its
    standard error (``<key>_se``).
    """
    from llmimg.data import ShapesWorld
    from llmimg.evaluation import shapes_eval, standard_error

    gen, writer = pipe.generator_stage, pipe.writer
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for split, prefix in (("val", ""), ("heldout", "heldout_")):
        prompts = [s.prompt for s in ShapesWorld(seed=seed).samples(n, split)]
        written = writer.upsample(prompts, seed=seed)
        for kind, texts in (("raw", prompts), ("upsampled", [w or p for w, p in zip(written, prompts)])):
            images = gen.generate(texts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                  scheduler=scheduler, seed=seed, check=False)
            rate = shapes_eval(images, prompts).all_correct
            out[f"{prefix}all_correct_{kind}"] = rate
            out[f"{prefix}all_correct_{kind}_se"] = standard_error(rate, n)
    return {**out, "n": n, "num_inference_steps": num_inference_steps, "scheduler": scheduler,
            "guidance_scale": gen.config.guidance_scale if guidance_scale is None else guidance_scale,
            "seconds": time.perf_counter() - t0}


__all__ = ["CODE_FILE", "DEFAULT_SCHEDULER", "DEFAULT_STEPS", "STAGES", "ClipModel", "ShapesPipeline",
           "ShapesPipelineOutput", "StageTimer", "check_outputs", "evaluate", "get",
           "no_loading_bars", "prompt_list"]
