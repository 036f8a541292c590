"""The seeds' pipeline on pretrained models, called as the tiny world's :class:`~llmimg.pipelines.shapes.ShapesPipeline` is.

::

    prompt ──LLM──▶ n candidate descriptions ──CLIP ViT-B/32 keeps one──▶
    description ──Stable Diffusion (its own CLIP text encoder, UNet, VAE)──▶ image

A pretrained LLM cannot read a CLIP embedding as a prefix without a trained mapper (the
tiny world trains one), so here it reads the prompt's text, and CLIP does what it can do
without training: it re-ranks the LLM's candidates (:mod:`~llmimg.pipelines.pretrained.rerank`),
by how near each candidate's text is to the prompt (``rerank="text"``), or by how near the
image drawn from each candidate is to it (``rerank="image"``, best-of-n).
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
from llmimg.pipelines.pretrained.rerank import check_rerank, pick_best, rank_images


@dataclass
class Upsampled:
    """The LLM stage's result: what it wrote, and what CLIP chose.

    ``descriptions``: the chosen one per prompt; ``candidates``: all of them, per prompt;
    ``similarities``: their text's CLIP cosine similarity to the prompt, ``(B, n)`` (``None``
    when not computed: one candidate, or another ``rerank``); ``rerank``: the mode that
    chose; ``scores``: what it chose by, ``(B, n)``: the text similarities for ``"text"``,
    the cosine similarity of each candidate's *image* with the typed prompt for ``"image"``
    (CLIPScore is ``100 * max(cos, 0)``), None when nothing was compared; ``chosen``: the
    index of the kept candidate per prompt.
    """

    descriptions: list[str]
    candidates: list[list[str]]
    similarities: torch.Tensor | None
    rerank: str = "text"
    scores: torch.Tensor | None = None
    chosen: list[int] | None = None


@dataclass
class PretrainedOutput(PipelineOutput):
    """:class:`~llmimg.pipelines.common.PipelineOutput` plus ``upsampled``: the LLM stage's :class:`Upsampled`
    (candidates, the scores the choice was made by, the choice), None with ``upsample=False``."""

    upsampled: Upsampled | None = None


@dataclass
class CandidateImages:
    """Every candidate description of each prompt, drawn from the prompt's own initial noise.

    ``images``: prompt k's candidate j at ``images[k][j]`` (``"pil"``: lists of PIL images;
    ``"np"``: a ``(B, n, H, W, 3)`` array; ``"pt"``: a ``(B, n, 3, H, W)`` tensor);
    ``upsampled``: the candidates with the image scores and the best-of-n choice (``rerank="image"``);
    ``timings``: milliseconds per stage for the whole call.
    """

    images: Any
    upsampled: Upsampled
    timings: dict[str, float]


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
                 seed: int | Sequence[int] | None = None, rerank: str | None = None) -> Upsampled:
        """Let the LLM write ``num_candidates`` descriptions per prompt and keep one by ``rerank`` (config default).

        ``seed``: one per prompt, or one for the list (prompt k then samples from
        ``(seed, "prompt", k)``), or None for fresh randomness. ``rerank="none"`` writes one
        candidate, whatever ``num_candidates`` (the first, from the same stream as the first of more); ``"image"``
        needs the images: call the pipeline, or :meth:`draw_candidates` (with the config's ``"image"``, the
        default here is ``"text"``).
        """
        mode = self._mode(rerank)
        if mode == "image" and rerank is None:  # the config's default needs images, which only the call draws
            mode = "text"
        if mode == "image":
            raise ValueError("rerank='image' chooses by the drawn images: call the pipeline (pipe(prompt, "
                             "rerank='image')) or pipe.draw_candidates(prompt)")
        return self._upsample(list(prompts), num_candidates, self._seeds(seed, len(prompts)),
                              StageTimer(self.writer.device), mode)

    @staticmethod
    def _seeds(seed: int | Sequence[int] | None, n: int) -> list[int] | None:
        if seed is None or isinstance(seed, int):
            return None if seed is None else [seeding.derive_seed(seed, "prompt", k) for k in range(n)]
        return list(seed)

    def _mode(self, rerank: str | None) -> str:
        return check_rerank(self.config.rerank if rerank is None else rerank)

    def _upsample(self, prompts: list[str], num_candidates: int | None, seeds: list[int] | None,
                  timer: StageTimer, mode: str = "text") -> Upsampled:
        """Write the candidates; with ``"text"`` keep the nearest, with ``"none"`` write and keep one, with
        ``"image"`` keep the first for now (the caller draws them all and chooses)."""
        n = 1 if mode == "none" else self.config.num_candidates if num_candidates is None else num_candidates
        with timer.stage("llm_generate"):
            candidates = self.writer.write(prompts, n, seeds=seeds, max_new_tokens=self.config.max_new_tokens,
                                           temperature=self.config.temperature)
        first = [0] * len(prompts)
        if n == 1 or mode != "text":
            return Upsampled([c[0] for c in candidates], candidates, None, mode, None, first)
        with timer.stage("clip_encode"):
            similarities = self.clip.rank(prompts, candidates)[1]
        best = pick_best(similarities)
        return Upsampled([cs[j] for cs, j in zip(candidates, best)], candidates, similarities, mode, similarities, best)

    def score_images(self, images: Sequence[Any], texts: Sequence[str]) -> torch.Tensor:
        """CLIP's cosine similarity of each image with its text, ``(N,)``: what ``rerank="image"`` ranks by.

        The cosine, not CLIPScore (``100 * max(cos, 0)``): the two rank alike wherever a
        candidate scores above 0, and the cosine still ranks where all score below.
        """
        return (self.clip.encode_images(images) * self.clip.encode_text(texts)).sum(-1)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, upsample: bool = True,
                 num_candidates: int | None = None, output_type: str = "pil",
                 return_dict: bool = True, rerank: str | None = None) -> PretrainedOutput | tuple:
        """Draw one image per prompt.

        ``num_inference_steps`` and ``guidance_scale`` default to the config's (sd-turbo:
        1 step, no guidance; guidance is on above 1). ``upsample=True`` draws the LLM's
        description chosen among ``num_candidates`` (config default) by ``rerank`` (config
        default; see :mod:`~llmimg.pipelines.pretrained.rerank`): ``"text"`` keeps the one whose
        text CLIP finds nearest the prompt, ``"image"`` draws every candidate from the prompt's
        noise and keeps the image CLIP finds nearest the prompt, ``"none"`` draws the first;
        ``upsample=False`` draws the prompt itself. ``generator`` seeds the initial noise
        (one for the batch or one per prompt, as in diffusers; None: fresh randomness) and
        the LLM's sampling (each prompt's seed read from its generator without advancing
        it), so a seeded call repeats exactly, calls with and without upsampling and with
        any ``rerank`` start from the same noise, and a prompt's description does not depend
        on the rest of its batch. ``timings`` counts every CLIP pass under ``clip_encode``:
        the ViT-B/32 re-ranking and the generator's text encoder reading the descriptions;
        with ``"image"`` every candidate's encoding, denoising and decoding counts.
        ``upsampled`` holds the candidates and the scores the choice was made by.
        """
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        prompts = self.check_inputs(prompt, steps, guidance)
        check_outputs(output_type, generator, len(prompts))
        mode = self._mode(rerank)
        n = self.config.num_candidates if num_candidates is None else num_candidates
        timer = StageTimer(self.image_generator._execution_device)  # where the generator computes
        if generator is None:
            generator = torch.Generator().manual_seed(seeding.fresh_seed())
        up, descriptions = None, prompts
        if upsample and mode == "image" and n > 1:
            up, decoded, keep = self._candidates(prompts, n, generator, steps, guidance, timer)
            rows = [k * n + j for k, j in enumerate(up.chosen)]
            images = self._postprocess(decoded[rows], None if keep is None else [keep[i] for i in rows],
                                       output_type, timer)
            descriptions = up.descriptions
        else:
            if upsample:
                up = self._upsample(prompts, n, seeding.peek_seeds(generator, len(prompts)), timer, mode)
                descriptions = up.descriptions
            decoded, keep = self._draw(descriptions, generator, steps, guidance, timer)
            images = self._postprocess(decoded, keep, output_type, timer)
        self.image_generator.maybe_free_model_hooks()
        if not return_dict:
            return images, descriptions, timer.result()
        return PretrainedOutput(images=images, descriptions=descriptions, timings=timer.result(), upsampled=up)

    @torch.no_grad()
    def draw_candidates(self, prompt: str | Sequence[str], num_candidates: int | None = None,
                        num_inference_steps: int | None = None, guidance_scale: float | None = None,
                        generator: torch.Generator | list[torch.Generator] | None = None,
                        output_type: str = "pil") -> CandidateImages:
        """Draw every candidate description of each prompt from the prompt's initial noise, and score the images.

        What ``pipe(prompt, rerank="image")`` does before it keeps one image per prompt, with
        every image returned, so the candidates can be shown or judged side by side. Same
        arguments and seeding as the call: candidate j's image is the one the call draws when
        it keeps candidate j, whichever ``rerank`` chose it.
        """
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        prompts = self.check_inputs(prompt, steps, guidance)
        check_outputs(output_type, generator, len(prompts))
        n = self.config.num_candidates if num_candidates is None else num_candidates
        timer = StageTimer(self.image_generator._execution_device)
        if generator is None:
            generator = torch.Generator().manual_seed(seeding.fresh_seed())
        up, decoded, keep = self._candidates(prompts, n, generator, steps, guidance, timer)
        images = self._postprocess(decoded, keep, output_type, timer)
        self.image_generator.maybe_free_model_hooks()
        if output_type == "pil":
            images = [images[k * n:(k + 1) * n] for k in range(len(prompts))]
        else:
            images = images.reshape(len(prompts), n, *images.shape[1:])
        return CandidateImages(images, up, timer.result())

    def _candidates(self, prompts: list[str], n: int, generator: torch.Generator | list[torch.Generator],
                    steps: int, guidance: float,
                    timer: StageTimer) -> tuple[Upsampled, torch.Tensor, list[bool] | None]:
        """Best-of-n: write ``n`` candidates per prompt, draw each from its prompt's noise, keep the best image."""
        up = self._upsample(prompts, n, seeding.peek_seeds(generator, len(prompts)), timer, "image")
        n = len(up.candidates[0])
        decoded, keep = self._draw([c for cs in up.candidates for c in cs], generator, steps, guidance, timer,
                                   repeats=n)
        pil = self._postprocess(decoded, keep, "pil", timer)
        with timer.stage("clip_encode"):
            chosen, scores = rank_images(prompts, pil, self.score_images)
        descriptions = [cs[j] for cs, j in zip(up.candidates, chosen)]
        return Upsampled(descriptions, up.candidates, None, "image", scores, chosen), decoded, keep

    def _draw(self, descriptions: list[str], generator: torch.Generator | list[torch.Generator], steps: int,
              guidance: float, timer: StageTimer, repeats: int = 1) -> tuple[torch.Tensor, list[bool] | None]:
        """Encode, denoise and decode ``descriptions``: the decoded images in [-1, 1] and which to denormalize.

        With ``repeats`` > 1 the descriptions come in groups of ``repeats`` per prompt, and
        each group starts from its prompt's noise: the very noise a call of one image per
        prompt draws from ``generator``.
        """
        sd = self.image_generator
        device = sd._execution_device
        # diffusers' own call runs the whole loop; encoding, denoising and decoding are called
        # separately here so that each is timed on its own, as the tiny pipeline reports them.
        cfg = guidance > 1 and sd.unet.config.time_cond_proj_dim is None
        with timer.stage("clip_encode"):
            embeds, negative = sd.encode_prompt(descriptions, device, 1, cfg)
        with timer.stage("denoise"):
            latents = None
            if repeats > 1:
                latents, generator = self._shared_noise(len(descriptions) // repeats, repeats, generator,
                                                        device, embeds.dtype)
            latents = sd(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=steps,
                         guidance_scale=guidance, generator=generator, latents=latents, output_type="latent").images
        with timer.stage("postprocess"):
            images = sd.vae.decode(latents / sd.vae.config.scaling_factor, return_dict=False)[0]
            images, nsfw = sd.run_safety_checker(images, device, embeds.dtype)
        # SD 1.5's safety checker blacks out flagged images; denormalizing them would turn them grey.
        return images, None if nsfw is None else [not flagged for flagged in nsfw]

    def _shared_noise(self, b: int, repeats: int, generator: torch.Generator | list[torch.Generator],
                      device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, Any]:
        """Each prompt's initial noise, drawn as diffusers draws it for ``b`` images, repeated for its candidates.

        Returns the noise and the generator(s) for the ``b * repeats`` images' later draws (a
        stochastic scheduler's): a list gets each prompt's generator once per candidate.
        """
        from diffusers.utils.torch_utils import randn_tensor

        sd = self.image_generator
        size = sd.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        shape = (b, sd.unet.config.in_channels, height, width)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if isinstance(generator, list):
            generator = [g for g in generator for _ in range(repeats)]
        return noise.repeat_interleave(repeats, dim=0), generator

    def _postprocess(self, decoded: torch.Tensor, keep: list[bool] | None, output_type: str,
                     timer: StageTimer) -> Any:
        with timer.stage("postprocess"):
            return self.image_generator.image_processor.postprocess(decoded, output_type=output_type,
                                                                    do_denormalize=keep)


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


__all__ = ["CandidateImages", "PretrainedOutput", "PretrainedPipeline", "Upsampled", "load"]
