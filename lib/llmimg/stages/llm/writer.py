"""The trained stage 2 as a writer: :class:`ShapesLLM` upsamples prompts and captions images.

When upsampling, the model writes the objects **in the prompt's order** (``prompt_order``):
its k-th phrase fills in the prompt's k-th phrase, a left-to-right copy. Written in
reading order, as the generator wants them, it would have to pick the object that comes
first on the canvas and commit to it before the shape word that names it; trained that
way, this model kept fewer than half of the two-object prompts. :meth:`ShapesLLM.upsample`
puts each description back in reading order. Captions are written in reading order.

**Sampling, one stream per description.** Each row samples from its own random stream,
``(seed, "describe", draw)`` (:mod:`llmimg.core.seeding`), through
:class:`~llmimg.core.sampling.RowSampler` (the Gumbel-max trick inside transformers'
``generate``). A description therefore depends on its prompt and its seed, never on the
other prompts of its batch.

A saved LLM is a ``save_pretrained`` GPT-2 folder (``AutoModelForCausalLM`` and
``AutoTokenizer`` load it) with the mapper in ``prefix_mapper/`` (a diffusers
``ModelMixin``, so ``PrefixMapper.from_pretrained`` loads it) and ``llmimg.json``, whose
``upstream`` names the CLIP's cache folder. Its tokenizer is the one for transformers'
text-generation pipeline (:func:`~llmimg.core.text.for_text_generation`: no ``<eos>``
after a prompt); the library reads texts with its CLIP's tokenizer, the one it was
trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.data import ParseError, reading_order
from llmimg.core.data.worlds import parse_world_prompt, prompt_followed
from llmimg.core.sampling import RowSampler
from llmimg.core.folders import first_line
from llmimg.core.loading import check_config, check_finite
from llmimg.core.store import (CheckpointError, Manifest, quiet_libraries, read_manifest, require_folder, save_model,
                               upstream_folder)
from llmimg.core.text import (BOS_ID, EOS_ID, PAD_ID, UngrammaticalPromptError, decode, encode, for_text_generation,
                              normalise_prompt, world_context_length, world_of)
from llmimg.stages.clip import ShapesCLIP
from llmimg.stages.llm.config import FORMAT, MAX_TRIES, RETRAIN, STAGE, TASKS, LLMConfig
from llmimg.stages.llm.constrained import Decoded, DescriptionAutomaton, constrained_decode
from llmimg.stages.llm.model import ClipCapLM, Context, PrefixMapper, task_ids, trim_padding

FILES = ["config.json", "model.safetensors", "tokenizer.json", "prefix_mapper/config.json"]
Seeds = int | Sequence[int] | None


def prompt_seeds(seed: Seeds, n: int) -> list[int]:
    """One seed per prompt: ``seed`` as a list, or prompt k's ``(seed, "prompt", k)``, or fresh ones for ``None``."""
    if seed is None:
        return [seeding.fresh_seed() for _ in range(n)]
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [seeding.derive_seed(int(seed), "prompt", k) for k in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    return seeds


def in_reading_order(descriptions: list[str]) -> list[str]:
    """Descriptions in reading order (:func:`~llmimg.core.data.reading_order`): what the generator was trained on.

    One that does not parse is returned as written, for the caller to see.
    """
    out = []
    for d in descriptions:
        try:
            out.append(reading_order(d))
        except ParseError:
            out.append(d)
    return out


@dataclass
class Written:
    """What the upsampler wrote for each prompt: the description, how many draws it took, whether it is faithful.

    ``faithful[k]`` is False when none of prompt k's draws parsed and kept everything
    the prompt states; its description is then the last draw, as written, for the
    caller to see or to refuse.
    """

    descriptions: list[str]
    draws: list[int]
    faithful: list[bool]

    @property
    def all_faithful(self) -> bool:
        return all(self.faithful)


class ShapesLLM:
    """The trained stage 2 with its CLIP: :meth:`upsample` prompts and :meth:`caption` images."""

    def __init__(self, lm: ClipCapLM, tokenizer: Any, clip: ShapesCLIP, config: LLMConfig, *,
                 path: Path | None = None, manifest: Manifest | None = None) -> None:
        self.lm, self.tokenizer, self.clip, self.config, self.path = lm.eval(), tokenizer, clip, config, path
        upstream = {"clip": clip.path.name} if clip.path is not None else {}
        self.manifest = manifest or Manifest(STAGE, FORMAT, config.as_dict(), upstream=upstream)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training loss by step (empty for an untrained model)."""
        return self.manifest.history

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @torch.no_grad()
    def generate(self, z: torch.Tensor, task: str, *, context: Context | None = None, do_sample: bool = True,
                 temperature: float = 1.0, top_k: int | None = None, num_beams: int = 1,
                 seeds: Sequence[int] | None = None, draw: int = 0, use_cache: bool = True,
                 max_new_tokens: int | None = None) -> list[str]:
        """Descriptions written from CLIP embeddings ``z`` (B, embed_dim) with transformers' ``generate``.

        ``context`` is what GPT-2 reads beside the prefix (:meth:`context` builds it
        from prompts or images; required when the model was trained to read one).
        ``do_sample=False`` is greedy (or beam search with ``num_beams > 1``); sampling
        takes ``temperature`` and ``top_k``, and row k draws from the stream
        ``(seeds[k], "describe", draw)`` (fresh seeds when ``seeds`` is None).
        ``use_cache`` is passed on, but transformers keeps the KV cache on when generating
        from ``inputs_embeds`` (as a prefix needs); notebook 04 times a loop without it.
        ``max_new_tokens`` defaults to the context length (a description fits in it).
        """
        tasks = task_ids(task, len(z), self.device)
        context_length = self.tokenizer.model_max_length
        max_new_tokens = context_length if max_new_tokens is None else max_new_tokens
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive whole number or None, got {top_k!r}")
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams must be a whole number of at least 1, got {num_beams!r}")
        if do_sample and num_beams > 1:
            raise ValueError("beam search is deterministic: use num_beams > 1 with do_sample=False")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or not 1 <= max_new_tokens <= context_length:
            raise ValueError(f"max_new_tokens must be between 1 and {context_length} (a description fits in the "
                             f"context), got {max_new_tokens!r}")
        if self.config.read_context and context is None:
            raise ValueError("this LLM reads a context beside the prefix: pass context=llm.context(prompts=...) "
                             "or context=llm.context(images=...)")
        z = z.to(self.device)
        embeds, mask = self.lm.prefix_embeds(z, tasks, None if context is None else context.to(z.device))
        options: dict[str, Any] = {"do_sample": False, "num_beams": num_beams}
        if do_sample:
            seeds = prompt_seeds(None, len(z)) if seeds is None else list(seeds)
            if len(seeds) != len(z):
                raise ValueError(f"got {len(seeds)} seeds for {len(z)} rows")
            options["logits_processor"] = [RowSampler([seeding.torch_generator(s, "describe", draw) for s in seeds],
                                                      temperature, top_k)]
        with quiet_libraries():  # transformers' notes on generation settings chosen on purpose
            ids = self.lm.gpt2.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                                        use_cache=use_cache, **options)
        return decode(self.tokenizer, ids)

    def context(self, prompts: list[str] | None = None, images: torch.Tensor | np.ndarray | None = None,
                ) -> Context | None:
        """What this LLM reads beside the prefix: the prompts' token ids, or the images' CLIP patch tokens.

        ``None`` for a model trained without reading (``config.read_context=False``).
        """
        if not self.config.read_context:
            return None
        if (prompts is None) == (images is None):
            raise ValueError("give either prompts or images")
        if prompts is not None:
            return Context(prompt_ids=trim_padding(encode(self.tokenizer, prompts, check=False)["input_ids"]))
        return Context(patches=self.clip.patch_tokens(images))

    def upsample(self, prompts: list[str], *, seed: Seeds = None, max_tries: int = MAX_TRIES,
                 **kwargs: Any) -> list[str] | tuple[list[str], list[int]] | Written:
        """Full descriptions for typed prompts, each read as ShapesWorld's grammar first.

        Prompts go through :func:`~llmimg.core.text.normalise_prompt`: unknown words,
        empty or overlong text, and words that do not read as objects raise a
        :class:`~llmimg.core.text.PromptError` saying why; "A red circle, top-left!" is
        read as "a red circle in the top left". ``seed``: one per prompt, or one for the
        list (prompt k then samples from ``(seed, "prompt", k)``), or None for fresh
        randomness. Sampled descriptions go through a checker: one that does not parse,
        or that contradicts its prompt, is drawn again, up to ``max_tries`` draws in all
        (``max_tries=1``: the model's raw samples). See :meth:`upsample_from`.
        """
        if isinstance(prompts, str):
            raise TypeError("upsample takes a list of prompts; wrap a single prompt in a list")
        prompts = [normalise_prompt(self.tokenizer, p) for p in prompts]
        return self.upsample_from(self.clip.encode_text(prompts), prompts, seeds=prompt_seeds(seed, len(prompts)),
                                  max_tries=max_tries, **kwargs)

    def upsample_from(self, z: torch.Tensor, prompts: list[str], *, seeds: Sequence[int] | None = None,
                      max_tries: int = MAX_TRIES, return_draws: bool = False, details: bool = False,
                      constrained: bool = False, **kwargs: Any) -> list[str] | tuple[list[str], list[int]] | Written:
        """Descriptions of ``prompts`` (in the grammar, as :meth:`upsample` makes them) whose CLIP embeddings are ``z``.

        **Rejection sampling.** The model samples a description ``d ~ q(d | prompt)``; if
        ``d`` does not parse or does not keep every attribute the prompt states, it is
        thrown away and drawn again. What is kept is a sample of ``q`` restricted to the
        faithful descriptions, ``q(d | prompt, faithful)``: the open attributes keep the
        model's distribution, renormalised. After ``max_tries`` draws the last one is
        kept, faithful or not, and the result says so (``details``). Greedy decoding
        (``do_sample=False``) is deterministic, so it is drawn once. Prompt k's draw j
        samples from ``(seeds[k], "describe", j)``. With ``return_draws`` it also returns
        how many draws each prompt took; with ``details``, a :class:`Written` (the
        descriptions, the draws, and whether each is faithful).

        A prompt outside the grammar could never be judged faithful, so it is refused
        (:class:`~llmimg.core.text.UngrammaticalPromptError`) before anything is drawn.

        **Constrained decoding** (``constrained=True``): instead of drawing
        again, the model writes through the grammar's automaton, which allows only
        descriptions that follow the prompt, and reads each run of forced tokens in one
        pass (:mod:`~llmimg.stages.llm.constrained`). One draw each; ``do_sample`` and
        ``temperature`` apply, ``top_k`` and beams do not. What it samples is the model's
        distribution masked word by word, not the rejection sampler's renormalised one.

        The model names the objects in the prompt's order (``config.prompt_order``); each
        description that parses is then rewritten in reading order, the order the
        generator was trained on (:func:`~llmimg.core.data.reading_order`).
        """
        if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
            raise ValueError(f"max_tries must be a whole number of at least 1, got {max_tries!r}")
        world = world_of(self.tokenizer)
        for p in prompts:
            try:
                parse_world_prompt(world, p)
            except ParseError as err:
                raise UngrammaticalPromptError(f"the prompt {p[:80]!r} is not in ShapesWorld's grammar ({err}); "
                                               "pass it through llm.upsample or normalise_prompt first") from None
        seeds = prompt_seeds(None, len(prompts)) if seeds is None else list(seeds)
        context = self.context(prompts=prompts)
        if constrained:
            out = self.write_constrained(z, prompts, context=context, seeds=seeds, **kwargs).descriptions
            tries = 1
        else:
            out = self.generate(z, "upsample", context=context, seeds=seeds, **kwargs)
            tries = max_tries if kwargs.get("do_sample", True) else 1
        draws = [1] * len(out)
        for attempt in range(1, tries):
            redo = [i for i, (p, d) in enumerate(zip(prompts, out)) if not prompt_followed(world, p, d)]
            if not redo:
                break
            again = self.generate(z[redo], "upsample", context=None if context is None else context.rows(redo),
                                  seeds=[seeds[i] for i in redo], draw=attempt, **kwargs)
            for i, d in zip(redo, again):
                out[i], draws[i] = d, draws[i] + 1
        kept = [prompt_followed(world, p, d) for p, d in zip(prompts, out)]
        out = in_reading_order(out)
        if details:
            return Written(out, draws, kept)
        return (out, draws) if return_draws else out

    def write_constrained(self, z: torch.Tensor, prompts: list[str], *, context: Context | None = None,
                          seeds: Sequence[int] | None = None, do_sample: bool = True, temperature: float = 1.0,
                          jump_forward: bool = True) -> Decoded:
        """Descriptions of ``prompts`` written through the grammar's automaton, and their cost (:meth:`upsample_from`).

        Row k samples from the stream ``(seeds[k], "describe", 0)``; greedy with ``do_sample=False``.
        """
        if not self.config.prompt_order:
            raise ValueError("constrained decoding follows the prompt's order, and this LLM writes in reading order")
        seeds = prompt_seeds(None, len(prompts)) if seeds is None else list(seeds)
        generators = [seeding.torch_generator(s, "describe", 0) for s in seeds] if do_sample else None
        world = world_of(self.tokenizer)
        return constrained_decode(self.lm, self.tokenizer, z.to(self.device), task_ids("upsample", len(z), self.device),
                                  [DescriptionAutomaton(parse_world_prompt(world, p)) for p in prompts],
                                  None if context is None else context.to(self.device),
                                  do_sample=do_sample, temperature=temperature, generators=generators,
                                  jump_forward=jump_forward)

    def caption(self, images: torch.Tensor | np.ndarray, **kwargs: Any) -> list[str]:
        """Descriptions of images (uint8 (B, H, W, 3) or [0, 1] float (B, 3, H, W)); greedy by default."""
        kwargs.setdefault("do_sample", False)
        return self.generate(self.clip.encode_image(images).to(self.device), "caption",
                             context=self.context(images=images), **kwargs)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a ``save_pretrained`` GPT-2 folder with ``prefix_mapper/``, a tokenizer and ``llmimg.json`` last.

        The tokenizer is :func:`~llmimg.core.text.for_text_generation`'s, so transformers'
        text-generation pipeline continues prompts. Into a new or empty folder, or over an
        LLM saved before (the user's other files there stay); any other non-empty
        folder is refused, with nothing written.
        """
        def write(out: Path) -> None:
            with quiet_libraries():
                self.lm.gpt2.save_pretrained(out)
                for_text_generation(self.tokenizer).save_pretrained(out)
                self.lm.mapper.save_pretrained(out / "prefix_mapper")

        return save_model(path, write, self.manifest, "LLM")

    @classmethod
    def from_pretrained(cls, path: str | Path, clip: ShapesCLIP | None = None) -> ShapesLLM:
        """Load an LLM saved by :meth:`save_pretrained`; its CLIP comes from the cache folder beside it unless given.

        Anything missing, damaged or unlike the config it was trained with is a
        :class:`CheckpointError` saying how to make it again; weights are read from
        safetensors only.
        """
        from transformers import GPT2LMHeadModel

        fix = f"retrain it with `{RETRAIN}`"
        path = require_folder(path, FILES, "an LLM checkpoint", RETRAIN)
        manifest = read_manifest(path, STAGE, fix)
        if clip is None:
            clip = ShapesCLIP.from_pretrained(upstream_folder(path, manifest, "clip"))
        try:
            config = LLMConfig.from_dict(manifest.config)
        except ValueError as err:
            raise CheckpointError(f"the config in {path.name!r} is damaged ({err}); {fix}") from None
        check_config(path, "config.json", gpt2_config(config, clip), fix)
        check_config(path, "prefix_mapper/config.json", mapper_config(config, clip), fix)
        try:
            with quiet_libraries():
                gpt2 = GPT2LMHeadModel.from_pretrained(path, use_safetensors=True)
                mapper = PrefixMapper.from_pretrained(path / "prefix_mapper", use_safetensors=True)
        except Exception as err:  # safetensors, JSON and shape errors all mean a damaged folder
            raise CheckpointError(f"{path.name!r} is not a loadable LLM checkpoint ({first_line(err)}); "
                                  f"{fix}") from err
        for part in (gpt2, mapper):
            check_finite(part, path, fix)
        # The folder's tokenizer is set up for text generation (no <eos> after a prompt); the
        # library reads whole texts, <bos> words <eos>, with the CLIP's tokenizer, as in training.
        return cls(ClipCapLM(gpt2, mapper), clip.tokenizer, clip, config, path=path, manifest=manifest)


def gpt2_config(config: LLMConfig, clip: ShapesCLIP) -> dict[str, Any]:
    """GPT-2's config values for an LLM of ``config`` on ``clip``: what :func:`build` makes and loading checks."""
    context = world_context_length(clip.tokenizer)  # the longest text, prompt or description, of the CLIP's world
    reads = max(clip.n_patches, context) if config.read_context else 0  # the longest context
    return {"model_type": "gpt2", "vocab_size": len(clip.tokenizer),
            "n_positions": config.prefix_length + reads + 1 + context, "n_embd": config.n_embd,
            "n_layer": config.n_layer, "n_head": config.n_head, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID}


def mapper_config(config: LLMConfig, clip: ShapesCLIP) -> dict[str, Any]:
    """The prefix mapper's config values for an LLM of ``config`` on ``clip`` (see :func:`gpt2_config`)."""
    return {"clip_dim": clip.embed_dim, "n_embd": config.n_embd, "prefix_length": config.prefix_length,
            "hidden_dim": config.mapper_hidden, "n_tasks": len(TASKS),
            "patch_dim": clip.patch_width if config.read_context else None}


def build(config: LLMConfig, clip: ShapesCLIP) -> ShapesLLM:
    """An untrained GPT-2 and prefix mapper sized by ``config``, for ``clip``'s embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2_values = {k: v for k, v in gpt2_config(config, clip).items() if k != "model_type"}
    mapper_values = mapper_config(config, clip)
    with seeding.isolated(config.seed, "init"):
        gpt2 = GPT2LMHeadModel(GPT2Config(**gpt2_values))
        mapper = PrefixMapper(clip_dim=mapper_values["clip_dim"], n_embd=mapper_values["n_embd"],
                              prefix_length=mapper_values["prefix_length"], hidden_dim=mapper_values["hidden_dim"],
                              patch_dim=mapper_values["patch_dim"])
    gpt2.generation_config.pad_token_id = PAD_ID
    return ShapesLLM(ClipCapLM(gpt2, mapper), clip.tokenizer, clip, config)


__all__ = ["FILES", "ShapesLLM", "Written", "build", "gpt2_config", "in_reading_order", "mapper_config", "prompt_seeds"]
