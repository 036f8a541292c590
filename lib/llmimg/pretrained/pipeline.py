"""The seeds' pipeline on pretrained models, called as the tiny world's :class:`~llmimg.pipeline.ShapesPipeline` is.

::

    prompt ──LLM──▶ n candidate descriptions ──CLIP ViT-B/32 keeps the one nearest the prompt──▶
    description ──Stable Diffusion (its own CLIP text encoder, UNet, VAE)──▶ image

A pretrained LLM cannot read a CLIP embedding as a prefix without a trained mapper (the
tiny world trains one), so here it reads the prompt's text, and CLIP does what it can do
honestly without training: it re-ranks the LLM's candidates by their similarity to the
prompt, which keeps the description from drifting away from what the prompt says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

from llmimg.generator import check_sampling
from llmimg.pipeline import StageTimer, check_outputs, prompt_list
from llmimg.pretrained.models import (DescriptionWriter, PretrainedCLIP, PretrainedConfig, load_clip,
                                      load_generator, load_writer, resolve_precision)
from llmimg.text import EmptyPromptError


@dataclass
class PretrainedPipelineOutput(BaseOutput):
    """What a pipeline call returns.

    ``images``: PIL images (``"pil"``), a ``(B, H, W, 3)`` float array in [0, 1] (``"np"``)
    or a ``(B, 3, H, W)`` tensor (``"pt"``); ``descriptions``: the texts the generator drew
    (the chosen LLM candidates, or the prompts with ``upsample=False``); ``timings``:
    milliseconds per stage and ``total`` for the whole batch, with the keys of
    :data:`llmimg.pipeline.STAGES`. ``clip_encode`` counts every CLIP pass: the ViT-B/32
    re-ranking of the candidates and the generator's text encoder reading the description.
    """

    images: Any
    descriptions: list[str]
    timings: dict[str, float]


@dataclass
class Upsampled:
    """The LLM stage's result: what it wrote, and what CLIP chose.

    ``descriptions``: the chosen one per prompt; ``candidates``: all of them, per prompt;
    ``similarities``: their CLIP cosine similarity to the prompt, ``(B, n)`` (``None``
    with one candidate: there is nothing to choose).
    """

    descriptions: list[str]
    candidates: list[list[str]]
    similarities: torch.Tensor | None


class PretrainedPipeline:
    """Prompt → LLM descriptions → CLIP re-ranking → Stable Diffusion, with per-stage timings.

    Build it with :func:`load` (hub ids or local folders in a :class:`PretrainedConfig`)
    or :func:`llmimg.pretrained.tiny_pipeline` (tiny random models, offline). ``clip``,
    ``writer`` and ``generator`` (a diffusers ``StableDiffusionPipeline``) can be used on
    their own, e.g. ``pipe.clip.score(images, prompts)``.
    """

    def __init__(self, clip: PretrainedCLIP, writer: DescriptionWriter, generator: Any,
                 config: PretrainedConfig = PretrainedConfig()) -> None:
        self.clip, self.writer, self.generator, self.config = clip, writer, generator, config

    def check_inputs(self, prompt: str | Sequence[str], num_inference_steps: int, guidance_scale: float) -> list[str]:
        """The prompts as a list; bad values raise ValueError (an empty prompt: :class:`~llmimg.text.EmptyPromptError`).
        """
        prompts = prompt_list(prompt)
        if any(not p.strip() for p in prompts):
            raise EmptyPromptError("a prompt is empty: write what the picture should show")
        check_sampling(num_inference_steps, guidance_scale, self.generator.scheduler.config.num_train_timesteps)
        return [p.strip() for p in prompts]

    def upsample(self, prompts: Sequence[str], num_candidates: int | None = None, *,
                 seed: int | None = None) -> Upsampled:
        """Let the LLM write ``num_candidates`` descriptions per prompt and CLIP pick the nearest to the prompt."""
        return self._upsample(list(prompts), num_candidates, seed, StageTimer())

    def _upsample(self, prompts: list[str], num_candidates: int | None, seed: int | None,
                  timer: StageTimer) -> Upsampled:
        n = self.config.num_candidates if num_candidates is None else num_candidates
        with timer.stage("llm_generate"):
            candidates = self.writer.write(prompts, n, seed=seed, max_new_tokens=self.config.max_new_tokens,
                                           temperature=self.config.temperature)
            _sync(self.writer.device)
        if n == 1:
            return Upsampled([c[0] for c in candidates], candidates, None)
        with timer.stage("clip_encode"):
            chosen, similarities = self.clip.rank(prompts, candidates)
            _sync(self.clip.device)
        return Upsampled(chosen, candidates, similarities)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, upsample: bool = True,
                 num_candidates: int | None = None, output_type: str = "pil",
                 return_dict: bool = True) -> PretrainedPipelineOutput | tuple:
        """Draw one image per prompt.

        ``num_inference_steps`` and ``guidance_scale`` default to the config's (sd-turbo:
        1 step, no guidance; guidance is on above 1). ``upsample=True`` draws the LLM's
        description chosen by CLIP among ``num_candidates`` (config default);
        ``upsample=False`` draws the prompt itself. ``generator`` seeds the initial noise
        (one for the batch or one per prompt, as in diffusers) and the LLM's sampling (a
        seed read from the first generator without advancing it), so a seeded call repeats
        exactly, and calls with and without upsampling start from the same noise.
        """
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        prompts = self.check_inputs(prompt, steps, guidance)
        check_outputs(output_type, generator, len(prompts))
        timer, sd = StageTimer(), self.generator
        device = sd._execution_device  # where the generator computes, with or without offloading
        descriptions = prompts
        if upsample:
            first = generator[0] if isinstance(generator, list) else generator
            seed = None if first is None else _peek_seed(first)
            descriptions = self._upsample(prompts, num_candidates, seed, timer).descriptions
        # diffusers' own call runs the whole loop; encoding, denoising and decoding are called
        # separately here so that each is timed on its own, as the tiny pipeline reports them.
        cfg = guidance > 1 and sd.unet.config.time_cond_proj_dim is None
        with timer.stage("clip_encode"):
            embeds, negative = sd.encode_prompt(descriptions, device, 1, cfg)
            _sync(device)
        with timer.stage("denoise"):
            latents = sd(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=steps,
                         guidance_scale=guidance, generator=generator, output_type="latent").images
            _sync(device)
        with timer.stage("postprocess"):
            images = sd.vae.decode(latents / sd.vae.config.scaling_factor, return_dict=False)[0]
            images, nsfw = sd.run_safety_checker(images, device, embeds.dtype)
            # SD 1.5's safety checker blacks out flagged images; denormalizing them would turn them grey.
            keep = None if nsfw is None else [not flagged for flagged in nsfw]
            images = sd.image_processor.postprocess(images, output_type=output_type, do_denormalize=keep)
            _sync(device)
        sd.maybe_free_model_hooks()
        if not return_dict:
            return images, descriptions, timer.result()
        return PretrainedPipelineOutput(images=images, descriptions=descriptions, timings=timer.result())


def _peek_seed(generator: torch.Generator) -> int:
    """A seed drawn from a copy of ``generator``, which is left as it was.

    The LLM samples from this seed, and the noise drawn next from ``generator`` is the
    same as in a call with ``upsample=False``: the two draw from the same noise.
    """
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return int(torch.randint(2**31 - 1, (1,), generator=copy, device=generator.device))


def _sync(device: torch.device) -> None:
    """Wait for the GPU, so that a stage's time includes the work it queued there."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(config: PretrainedConfig = PretrainedConfig(), *, device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, offload: bool = False,
         attention_slicing: bool = False) -> PretrainedPipeline:
    """The pipeline on the models ``config`` names: downloaded once from the hub, or read from local folders.

    ``device``: see :func:`llmimg.config.get_device`; ``dtype``: float16 on CUDA, float32
    elsewhere (float16 on the CPU is refused); ``offload`` keeps the weights on the CPU
    and moves each model to the GPU only while it runs; ``attention_slicing`` (see
    :func:`~llmimg.pretrained.load_generator`) trades speed for memory in the generator.
    A model that cannot be fetched raises :class:`~llmimg.pretrained.PretrainedUnavailableError`.
    """
    device, dtype = resolve_precision(device, dtype, offload)
    where = {"device": device, "dtype": dtype, "offload": offload}
    clip = load_clip(config.clip_model, config.clip_pretrained, **where)
    writer = load_writer(config.llm, config.llm_revision, **where)
    generator = load_generator(config.generator, config.generator_revision, variant=config.generator_variant,
                               attention_slicing=attention_slicing, **where)
    return PretrainedPipeline(clip, writer, generator, config)


__all__ = ["PretrainedPipeline", "PretrainedPipelineOutput", "Upsampled", "load"]
