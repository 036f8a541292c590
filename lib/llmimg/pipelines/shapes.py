"""The whole LLM-guided text-to-image pipeline of the tiny world as one ``diffusers.DiffusionPipeline``.

A prompt goes through three trained stages::

    prompt ──CLIP text tower──▶ embedding ──prefix mapper + GPT-2──▶ description
           ──CLIP token states──▶ UNet denoising loop (scheduler) ──▶ 32×32 image

:class:`ShapesPipeline` holds the components the way Stable Diffusion's pipeline does
(``clip``, ``tokenizer``, ``llm``, ``prefix_mapper``, ``unet``, ``scheduler``), so it
saves and loads with ``save_pretrained`` / ``from_pretrained``, its scheduler swaps
with ``from_config``, and calling it follows diffusers' signature
(``num_inference_steps``, ``guidance_scale``, ``generator``, ``output_type``,
``callback_on_step_end``). Each call also reports how long every stage took.

**The pipeline owns its stages.** The stage objects the call uses (:attr:`text_encoder`,
:attr:`writer`, :attr:`image_generator`) are views over the components, built once and
rebuilt only when a component is swapped (``register_modules``, setting
``pipe.scheduler``, :meth:`use_scheduler`, :meth:`use_generator`). How the sampling loop
runs the UNet is the pipeline's :attr:`sampling` (a
:class:`~llmimg.stages.generator.SamplingOptions`): the speed lab's switches change it,
never a method of a component.

A saved folder also loads with diffusers' generic loader,
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, the way custom
pipelines on the Hugging Face hub do: the folder holds a code file (:data:`CODE_FILE`)
that ``model_index.json`` names as ``[module, class]``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from llmimg.core import seeding
from llmimg.core.checks import check_outputs, check_sampling, prompt_list
from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import shapes_eval, standard_error
from llmimg.core.folders import first_line, json_says, save_into
from llmimg.core.store import MANIFEST, CheckpointError, Manifest, quiet_libraries, read_manifest, write_manifest
from llmimg.core.text import CONTEXT_LENGTH, normalise_prompt  # notebook 06 reads CONTEXT_LENGTH here
from llmimg.pipelines.common import STAGES, PipelineOutput, StageTimer
from llmimg.pipelines.saved import COMPONENTS, check_components, check_index
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

FORMAT = 1  # the layout of a saved pipeline folder (its llmimg.json's "format")
DEFAULT_STEPS = 10  # the fast setting: DPM-Solver++ at 10 steps (``make bench`` compares it with DDPM at 1000)
DEFAULT_SCHEDULER = "dpm++"
RETRAIN = "save it again with ShapesPipeline.save_pretrained, or rebuild it with llmimg.pipelines.shapes.get()"
# The hub's convention for a custom pipeline: model_index.json names [module, class] and the
# module's file lies in the folder, so DiffusionPipeline.from_pretrained can import the class.
CODE_MODULE = "shapes_pipeline"
CODE_FILE = f"{CODE_MODULE}.py"
CODE = '''"""ShapesPipeline for diffusers: DiffusionPipeline.from_pretrained(folder, trust_remote_code=True).

The class comes from the installed llmimg package; this file only names it.
"""

from llmimg.pipelines.shapes import ShapesPipeline

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
class _Views:
    """The stage objects a call uses, over the pipeline's components."""

    text_encoder: clip_stage.ShapesCLIP
    writer: llm_stage.ShapesLLM
    image_generator: gen_stage.ShapesGenerator


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
        self.sampling = gen_stage.SamplingOptions()

    # -- the stages, built once -----------------------------------------------------------
    def register_modules(self, **kwargs: Any) -> None:
        super().register_modules(**kwargs)
        self._components_changed(kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in COMPONENTS:
            self._components_changed({name: value})

    def _components_changed(self, names: Any) -> None:
        """Forget the stage views (they are rebuilt on next use); a new text encoder also empties the text cache."""
        self.__dict__["_views"] = None
        sampling = self.__dict__.get("sampling")
        if sampling is not None and sampling.text_state_cache is not None and {"clip", "tokenizer"} & set(names):
            sampling.text_state_cache = {}

    def _stages(self) -> _Views:
        if self.__dict__.get("_views") is None:
            from diffusers import DDPMScheduler

            configs = self.config.stage_configs
            text = clip_stage.ShapesCLIP(self.clip.model, self.tokenizer,
                                         clip_stage.ClipConfig.from_dict(configs["clip"]))
            writer = llm_stage.ShapesLLM(llm_stage.ClipCapLM(self.llm, self.prefix_mapper), self.tokenizer, text,
                                         llm_stage.LLMConfig.from_dict(configs["llm"]))
            image_generator = gen_stage.ShapesGenerator(
                self.unet, DDPMScheduler.from_config(self.scheduler.config), text,
                gen_stage.GeneratorConfig.from_dict(configs["generator"]))
            self.__dict__["_views"] = _Views(text, writer, image_generator)
        return self.__dict__["_views"]

    @property
    def text_encoder(self) -> clip_stage.ShapesCLIP:
        """The CLIP with its tokenizer, as the stages use it."""
        return self._stages().text_encoder

    @property
    def writer(self) -> llm_stage.ShapesLLM:
        """The LLM stage (GPT-2 and prefix mapper on this pipeline's CLIP)."""
        return self._stages().writer

    @property
    def image_generator(self) -> gen_stage.ShapesGenerator:
        """The image generator stage (UNet and its DDPM training scheduler on this pipeline's CLIP)."""
        return self._stages().image_generator

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_stages(cls, llm: llm_stage.ShapesLLM, image_generator: gen_stage.ShapesGenerator,
                    scheduler: str = DEFAULT_SCHEDULER) -> ShapesPipeline:
        """A pipeline of a trained LLM (with its CLIP) and a generator trained on that CLIP's token states."""
        text = llm.clip
        trained_on = image_generator.manifest.upstream.get("clip")
        if trained_on is not None and text.path is not None and trained_on != Path(text.path).name:
            raise ValueError(f"the generator was trained on the CLIP {trained_on!r}, "
                             f"the LLM on {Path(text.path).name!r}")
        wrapped = ClipModel(clip_stage.model_config(text.config.model_name))
        wrapped.model.load_state_dict(text.model.state_dict())
        return cls(clip=wrapped.eval(), tokenizer=llm.tokenizer, llm=llm.lm.gpt2, prefix_mapper=llm.lm.mapper,
                   unet=image_generator.unet,
                   scheduler=gen_stage.make_scheduler(scheduler, image_generator.scheduler.config),
                   stage_configs={"clip": text.config.as_dict(), "llm": llm.config.as_dict(),
                                  "generator": image_generator.config.as_dict()})

    def use_scheduler(self, name: str) -> ShapesPipeline:
        """Swap the sampler by name (one of ``stages.generator.SCHEDULERS``) with ``from_config``; returns self."""
        self.scheduler = gen_stage.make_scheduler(name, self.scheduler.config)
        return self

    def use_generator(self, image_generator: gen_stage.ShapesGenerator, scheduler: str = "ddim") -> ShapesPipeline:
        """Swap in another generator on the same CLIP (a distilled one, :mod:`llmimg.speed.distillation`); returns self.

        Its UNet, its config (so its default guidance scale) and the sampler ``scheduler``
        replace the current ones; call with the step count it was trained for.
        """
        if image_generator.unet.config.cross_attention_dim != self.unet.config.cross_attention_dim:
            raise ValueError("this generator reads text states of another width: it was trained on another CLIP")
        self.register_to_config(stage_configs={**self.config.stage_configs,
                                               "generator": image_generator.config.as_dict()})
        self.register_modules(unet=image_generator.unet.to(self.device),
                              scheduler=gen_stage.make_scheduler(scheduler, image_generator.scheduler.config))
        return self

    # -- saving and loading -----------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained`` plus :data:`CODE_FILE` and ``llmimg.json``, replacing only the pipeline's.

        Into a new or empty folder directly; into a folder holding a saved pipeline
        through a temporary folder beside it whose entries replace their namesakes one by
        one (``llmimg.json`` and ``model_index.json`` last), so a crash leaves no folder
        that looks complete and files of the user's beside the pipeline are kept
        (:func:`~llmimg.core.folders.save_into`). A folder that is not empty and holds no
        saved pipeline is refused, with nothing written. ``model_index.json`` names the
        class as ``[CODE_MODULE, "ShapesPipeline"]`` so that diffusers' generic loader
        finds it; ``llmimg.json`` records the size and SHA-256 of every file written,
        which :meth:`from_pretrained` checks.
        """
        def write(folder: Path) -> None:
            with quiet_libraries():
                super(ShapesPipeline, self).save_pretrained(folder, safe_serialization=True, **kwargs)
            (folder / CODE_FILE).write_text(CODE, encoding="utf-8")
            index_file = folder / "model_index.json"
            index = json.loads(index_file.read_text(encoding="utf-8"))
            index["_class_name"] = [CODE_MODULE, "ShapesPipeline"]
            index["_llmimg_manifest"] = MANIFEST  # so a folder that lost its manifest is refused, not read as old
            index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            write_manifest(folder, Manifest("pipeline", FORMAT, dict(self.config.stage_configs)))

        save_into(save_directory, write, markers=(MANIFEST, "model_index.json"), what="pipeline",
                  holds=lambda folder: json_says(folder / "model_index.json", "_class_name",
                                                 [CODE_MODULE, "ShapesPipeline"], "ShapesPipeline"))

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
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> ShapesPipeline:
        """Load a folder written by :meth:`save_pretrained` (never from the hub, safetensors only).

        The files are checked against the sizes and checksums ``llmimg.json`` recorded (a
        folder saved before the record existed has none), and every component's config
        against the stage configs it was trained with, before anything draws: damage of
        any kind raises :class:`~llmimg.core.store.CheckpointError` naming the folder.
        """
        path = Path(pretrained_model_name_or_path)
        if not (path / "model_index.json").is_file():
            what = "does not exist" if not path.exists() else "has no model_index.json"
            raise CheckpointError(f"the pipeline folder {path.name!r} {what}; {RETRAIN}")
        if (path / MANIFEST).is_file() or json_says(path / "model_index.json", "_llmimg_manifest", MANIFEST):
            read_manifest(path, "pipeline", RETRAIN)
        check_index(path, RETRAIN)
        try:
            with quiet_libraries():  # six small components load in milliseconds: no bars needed
                pipe = super().from_pretrained(path, local_files_only=True, use_safetensors=True, **kwargs)
            pipe._stages()  # damaged stage configs fail here, not at the first call
        except Exception as err:  # JSON, safetensors and shape errors all mean a damaged folder
            raise CheckpointError(f"the pipeline folder {path.name!r} is damaged ({type(err).__name__}: "
                                  f"{first_line(err)}); {RETRAIN}") from err
        check_components(pipe, path, RETRAIN)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- generation -------------------------------------------------------------------
    def check_inputs(self, prompt: str | list[str], num_inference_steps: int, guidance_scale: float) -> list[str]:
        """The prompts as a checked list, each in ShapesWorld's grammar; bad values raise ValueError.

        Prompts go through :func:`~llmimg.core.text.normalise_prompt`: what cannot be
        read as ShapesWorld's objects raises a :class:`~llmimg.core.text.PromptError`
        saying why, the rest comes back in the grammar ("A red circle, top-left!" is
        "a red circle in the top left").
        """
        prompts = prompt_list(prompt)
        check_sampling(num_inference_steps, guidance_scale, self.scheduler.config.num_train_timesteps)
        return [normalise_prompt(self.tokenizer, p) for p in prompts]

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = DEFAULT_STEPS,
                 guidance_scale: float | None = None, generator: torch.Generator | list[torch.Generator] | None = None,
                 upsample: bool = True, output_type: str = "pil", return_dict: bool = True,
                 do_sample: bool = True, temperature: float = 1.0, constrained: bool = False,
                 callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
                 guidance_end: float = 1.0) -> PipelineOutput | tuple:
        """Draw one image per prompt.

        ``upsample=True`` lets the LLM write a full description of each prompt (sampled
        with ``temperature`` and redrawn when it contradicts the prompt, or greedy with
        ``do_sample=False``; see :meth:`llmimg.stages.llm.ShapesLLM.upsample_from`) and draws
        that; the output's ``faithful`` says, per prompt, whether a draw kept everything
        the prompt states (when none did, the last is drawn). ``constrained=True`` has the
        LLM write through the grammar's automaton instead, which allows only descriptions
        that follow the prompt and reads forced tokens in one pass (see
        :mod:`llmimg.stages.llm.constrained`). ``upsample=False`` draws
        the prompt itself. ``guidance_scale`` (None: the
        generator's trained default) turns on classifier-free guidance above 1, on the
        first ``guidance_end`` share of the steps (1: all of them).

        ``generator`` seeds everything random (one for the batch, or one per prompt as in
        diffusers; None: fresh randomness). Each prompt's LLM seed is read from it without
        advancing it, so the noise is the same with the LLM on or off, and a prompt's
        description depends on its own seed only, never on the rest of its batch.
        Prompts are checked first (:meth:`check_inputs`): empty, too long, with words
        outside the vocabulary or not readable as objects, they raise
        :class:`~llmimg.core.text.PromptError` naming the problem.
        """
        views = self._stages()
        gen, writer = views.image_generator, views.writer
        guidance_scale = gen.config.guidance_scale if guidance_scale is None else guidance_scale
        # 1. Check inputs: the prompts, the sampling settings and the outputs, before any work.
        prompts = self.check_inputs(prompt, num_inference_steps, guidance_scale)
        check_outputs(output_type, generator, len(prompts))
        timer = StageTimer(self.device)
        # 2. Seeds: the noise streams, and each prompt's LLM seed read from them without advancing them.
        if generator is None:
            generator = torch.Generator().manual_seed(seeding.fresh_seed())
        llm_seeds = seeding.peek_seeds(generator, len(prompts))
        descriptions, faithful = prompts, None
        if upsample:
            # 3. Encode the prompts: CLIP's pooled text embedding, the LLM's prefix.
            with timer.stage("clip_encode"):
                z = views.text_encoder.encode_text(prompts, check=False)
            # 4. Write: the LLM's description of each prompt, checked against it.
            with timer.stage("llm_generate"):
                longest = writer.tokenizer.model_max_length - 2  # the words of a description, without <bos>, <eos>
                options = {"constrained": True} if constrained else {"max_new_tokens": longest}
                written = writer.upsample_from(z, prompts, seeds=llm_seeds, do_sample=do_sample,
                                               temperature=temperature, details=True, **options)
            # An empty output would mean "no condition" to the generator: keep the prompt instead.
            descriptions = [d or p for d, p in zip(written.descriptions, prompts)]
            faithful = written.faithful
        # 5. Encode the descriptions: CLIP's token states, and the unconditional text's.
        with timer.stage("clip_encode"):
            cache = self.sampling.text_state_cache
            states, mask = gen.text_states(descriptions, False, cache)
            uncond = gen.text_states([""], False, cache)
        on_step = None
        if callback_on_step_end is not None:
            def on_step(i: int, t: Any, latents: torch.Tensor) -> torch.Tensor:
                return callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)

        with timer.stage("denoise"):
            # 6. Prepare the latents: one noise image per prompt, from its generator.
            latents = gen.prepare_latents(len(prompts), generator, self.scheduler)
            # 7. Denoise with the scheduler, guided.
            latents, _ = gen.denoise(latents, states, mask, uncond, num_inference_steps, guidance_scale,
                                     self.scheduler, generator, options=self.sampling, on_step=on_step,
                                     guidance_end=guidance_end)
        # 8. Decode: latents to pixels, in the format asked for.
        with timer.stage("postprocess"):
            images = gen_stage.to_images(latents.float().cpu(), gen.config.unshuffle)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, descriptions, timer.result()
        return PipelineOutput(images=images, descriptions=descriptions, timings=timer.result(), faithful=faithful)


def get(profile: str | Profile | None = None, *, progress: bool = True, scheduler: str = DEFAULT_SCHEDULER,
        device: str | torch.device | None = None, world: str = "shapes") -> ShapesPipeline:
    """The profile's pipeline of ``world`` from its cached CLIP, LLM and generator (each trained first if missing)."""
    profile = get_profile(profile)
    clip = clip_stage.get(profile, progress=progress, world=world)
    llm = llm_stage.get(profile, clip=clip, progress=progress)
    image_generator = gen_stage.get(profile, clip=clip, progress=progress, world=world)
    pipe = ShapesPipeline.from_stages(llm, image_generator, scheduler=scheduler)
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
    gen, writer = pipe.image_generator, pipe.writer
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    for split, prefix in (("val", ""), ("heldout", "heldout_")):
        prompts = [s.prompt for s in ShapesWorld(seed=seed).samples(n, split)]
        written = writer.upsample(prompts, seed=seed)
        for kind, texts in (("raw", prompts), ("upsampled", [w or p for w, p in zip(written, prompts)])):
            images = gen.generate(texts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                  scheduler=scheduler, seed=seed, check=False, options=pipe.sampling)
            rate = shapes_eval(images, prompts).all_correct
            out[f"{prefix}all_correct_{kind}"] = rate
            out[f"{prefix}all_correct_{kind}_se"] = standard_error(rate, n)
    return {**out, "n": n, "num_inference_steps": num_inference_steps, "scheduler": scheduler,
            "guidance_scale": gen.config.guidance_scale if guidance_scale is None else guidance_scale,
            "seconds": time.perf_counter() - t0}


__all__ = ["CODE_FILE", "CONTEXT_LENGTH", "COMPONENTS", "DEFAULT_SCHEDULER", "DEFAULT_STEPS", "FORMAT", "STAGES",
           "ClipModel", "PipelineOutput", "ShapesPipeline", "evaluate", "get"]
