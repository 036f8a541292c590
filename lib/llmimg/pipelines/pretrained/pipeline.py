"""The seeds' pipeline on pretrained models, called as the tiny world's :class:`~llmimg.pipelines.shapes.ShapesPipeline` is.

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

from llmimg.core import seeding
from llmimg.core.checks import check_outputs, check_sampling, prompt_list
from llmimg.core.text import EmptyPromptError
from llmimg.pipelines.common import PipelineOutput, StageTimer
from llmimg.pipelines.pretrained.models import (DescriptionWriter, PretrainedCLIP, PretrainedConfig, load_clip,
                                                load_generator, load_writer, resolve_precision)


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
    or :func:`llmimg.pipelines.pretrained.tiny_pipeline` (tiny random models, offline). ``clip``,
    ``writer`` and ``image_generator`` (a diffusers ``StableDiffusionPipeline``) can be used on
    their own, e.g. ``pipe.clip.score(images, prompts)``.
    """

    def __init__(self, clip: PretrainedCLIP, writer: DescriptionWriter, image_generator: Any,
                 config: PretrainedConfig = PretrainedConfig()) -> None:
        self.clip, self.writer, self.image_generator, self.config = clip, writer, image_generator, config

    def check_inputs(self, prompt: str | Sequence[str], num_inference_steps: int, guidance_scale: float) -> list[str]:
        """The prompts as a list; bad values raise ValueError (an empty prompt: :class:`~.core.text.EmptyPromptError`).
        """
        prompts = prompt_list(prompt)
        if any(not p.strip() for p in prompts):
            raise EmptyPromptError("a prompt is empty: write what the picture should show")
        check_sampling(num_inference_steps, guidance_scale, self.image_generator.scheduler.config.num_train_timesteps)
        return [p.strip() for p in prompts]

    def upsample(self, prompts: Sequence[str], num_candidates: int | None = None, *,
                 seed: int | Sequence[int] | None = None) -> Upsampled:
        """Let the LLM write ``num_candidates`` descriptions per prompt and CLIP pick the nearest to the prompt.

        ``seed``: one per prompt, or one for the list (prompt k then samples from
        ``(seed, "prompt", k)``), or None for fresh randomness.
        """
        prompts = list(prompts)
        if seed is None or isinstance(seed, int):
            seeds = None if seed is None else [seeding.derive_seed(seed, "prompt", k) for k in range(len(prompts))]
        else:
            seeds = list(seed)
        return self._upsample(prompts, num_candidates, seeds, StageTimer(self.writer.device))

    def _upsample(self, prompts: list[str], num_candidates: int | None, seeds: list[int] | None,
                  timer: StageTimer) -> Upsampled:
        n = self.config.num_candidates if num_candidates is None else num_candidates
        with timer.stage("llm_generate"):
            candidates = self.writer.write(prompts, n, seeds=seeds, max_new_tokens=self.config.max_new_tokens,
                                           temperature=self.config.temperature)
        if n == 1:
            return Upsampled([c[0] for c in candidates], candidates, None)
        with timer.stage("clip_encode"):
            chosen, similarities = self.clip.rank(prompts, candidates)
        return Upsampled(chosen, candidates, similarities)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, upsample: bool = True,
                 num_candidates: int | None = None, output_type: str = "pil",
                 return_dict: bool = True) -> PipelineOutput | tuple:
        """Draw one image per prompt.

        ``num_inference_steps`` and ``guidance_scale`` default to the config's (sd-turbo:
        1 step, no guidance; guidance is on above 1). ``upsample=True`` draws the LLM's
        description chosen by CLIP among ``num_candidates`` (config default);
        ``upsample=False`` draws the prompt itself. ``generator`` seeds the initial noise
        (one for the batch or one per prompt, as in diffusers; None: fresh randomness) and
        the LLM's sampling (each prompt's seed read from its generator without advancing
        it), so a seeded call repeats exactly, calls with and without upsampling start from
        the same noise, and a prompt's description does not depend on the rest of its batch.
        ``timings`` counts every CLIP pass under ``clip_encode``: the ViT-B/32 re-ranking of
        the candidates and the generator's text encoder reading the description.
        """
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        prompts = self.check_inputs(prompt, steps, guidance)
        check_outputs(output_type, generator, len(prompts))
        sd = self.image_generator
        device = sd._execution_device  # where the generator computes, with or without offloading
        timer = StageTimer(device)
        if generator is None:
            generator = torch.Generator().manual_seed(seeding.fresh_seed())
        descriptions = prompts
        if upsample:
            seeds = seeding.peek_seeds(generator, len(prompts))
            descriptions = self._upsample(prompts, num_candidates, seeds, timer).descriptions
        # diffusers' own call runs the whole loop; encoding, denoising and decoding are called
        # separately here so that each is timed on its own, as the tiny pipeline reports them.
        cfg = guidance > 1 and sd.unet.config.time_cond_proj_dim is None
        with timer.stage("clip_encode"):
            embeds, negative = sd.encode_prompt(descriptions, device, 1, cfg)
        with timer.stage("denoise"):
            latents = sd(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=steps,
                         guidance_scale=guidance, generator=generator, output_type="latent").images
        with timer.stage("postprocess"):
            images = sd.vae.decode(latents / sd.vae.config.scaling_factor, return_dict=False)[0]
            images, nsfw = sd.run_safety_checker(images, device, embeds.dtype)
            # SD 1.5's safety checker blacks out flagged images; denormalizing them would turn them grey.
            keep = None if nsfw is None else [not flagged for flagged in nsfw]
            images = sd.image_processor.postprocess(images, output_type=output_type, do_denormalize=keep)
        sd.maybe_free_model_hooks()
        if not return_dict:
            return images, descriptions, timer.result()
        return PipelineOutput(images=images, descriptions=descriptions, timings=timer.result())


def load(config: PretrainedConfig = PretrainedConfig(), *, device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, offload: bool = False,
         attention_slicing: bool = False) -> PretrainedPipeline:
    """The pipeline on the models ``config`` names: downloaded once from the hub, or read from local folders.

    ``device``: see :func:`llmimg.core.config.get_device`; ``dtype``: float16 on CUDA, float32
    elsewhere (float16 on the CPU is refused); ``offload`` keeps the weights on the CPU
    and moves each model to the GPU only while it runs; ``attention_slicing`` (see
    :func:`~llmimg.pipelines.pretrained.load_generator`) trades speed for memory in the generator.
    A model that cannot be fetched raises :class:`~llmimg.pipelines.pretrained.PretrainedUnavailableError`.
    """
    device, dtype = resolve_precision(device, dtype, offload)
    where = {"device": device, "dtype": dtype, "offload": offload}
    clip = load_clip(config.clip_model, config.clip_pretrained, **where)
    writer = load_writer(config.llm, config.llm_revision, **where)
    image_generator = load_generator(config.generator, config.generator_revision,
                                     variant=config.generator_variant, attention_slicing=attention_slicing, **where)
    return PretrainedPipeline(clip, writer, image_generator, config)


__all__ = ["PretrainedPipeline", "Upsampled", "load"]
