"""Stage 2: a tiny GPT-2 that writes full ShapesWorld descriptions from CLIP features.

ClipCap-style: a small MLP (the *prefix mapper*) turns one CLIP embedding into
``prefix_length`` vectors that GPT-2 reads before ``<bos>``; GPT-2 then writes the
description. One model serves two tasks, told apart by a learned task vector:

* ``"upsample"``: from a typed prompt's CLIP *text* embedding, write a description
  that keeps what the prompt states and fills in the rest the way the data does;
* ``"caption"``: from an image's CLIP *image* embedding, write that image's
  description (the P(D | I) term of the joint model in notebook 01).

One pooled embedding loses which attribute belongs to which object ("a red circle and
a blue square" and "a blue circle and a red square" land close together), so between
the prefix and ``<bos>`` GPT-2 also *reads* a context: for upsampling, the prompt's own
tokens (as DALL-E 3's upsampler reads the user's text); for captioning, CLIP's image
patch tokens, projected by the mapper (as LLaVA reads patches). The prefix, the
context and the description form one sequence ``[prefix] [context] <bos> description``;
padding inside the context is masked and positions count real tokens only (what
``generate`` does from the attention mask), so padding never shifts a position.

When upsampling, the model writes the objects **in the prompt's order** (``prompt_order``):
its k-th phrase fills in the prompt's k-th phrase, a left-to-right copy. Written in
reading order, as the generator wants them, it would have to pick the object that comes
first on the canvas and commit to it before the shape word that names it; trained that
way, this model kept fewer than half of the two-object prompts. :meth:`ShapesLLM.upsample`
puts each description back in reading order. Captions are written in reading order.

The CLIP stays frozen; the GPT-2 and the mapper train together with the
language-model loss on the description tokens. A saved LLM is a ``save_pretrained``
GPT-2 folder (``AutoModelForCausalLM`` and ``AutoTokenizer`` load it) with the mapper
in ``prefix_mapper/`` (a diffusers ``ModelMixin``, so ``PrefixMapper.from_pretrained``
loads it). Its tokenizer is the one for transformers' text-generation pipeline
(:func:`~llmimg.text.for_text_generation`: no ``<eos>`` after a prompt); the library
reads texts with its CLIP's tokenizer, the one it was trained with.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from transformers.utils import logging as hf_logging

from llmimg import clip as clip_stage
from llmimg.checkpoints import CheckpointError, cached, read_manifest, require_folder, write_manifest
from llmimg.config import Profile, get_profile
from llmimg.text import BOS_ID, CONTEXT_LENGTH, EOS_ID, PAD_ID, check_prompt, decode, encode, for_text_generation
from llmimg.training import StageConfig, TrainConfig, fit

# transformers reports every save and load with a progress bar and warns about settings
# we chose on purpose (no padding in generation); keep notebooks readable.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

TASKS: tuple[str, ...] = ("upsample", "caption")
MAX_TRIES = 16  # draws per prompt before the upsampler keeps an unfaithful description (see upsample_from)
FILES = ["config.json", "model.safetensors", "tokenizer.json", "prefix_mapper/config.json"]
RETRAIN = "llmimg train llm --force"


@dataclass(frozen=True)
class LLMConfig(StageConfig):
    """Everything that determines a trained LLM: GPT-2 shape, prefix, data, training and its CLIP."""

    n_embd: int = 128
    n_layer: int = 3
    n_head: int = 4
    prefix_length: int = 4
    mapper_hidden: int = 256
    read_context: bool = True  # read the prompt's tokens / CLIP's patch tokens beside the prefix (see module doc)
    prompt_order: bool = True  # upsampling targets name the objects in the prompt's order (see module doc)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=64, lr=1e-3))
    n_train: int = 20_000
    caption_rate: float = 0.5  # share of training examples that are captioning (the rest upsampling)
    seed: int = 0
    clip: dict[str, Any] = field(default_factory=lambda: clip_stage.ClipConfig().as_dict())


def default_config(profile: str | Profile | None = None) -> LLMConfig:
    """The LLM each profile trains (on top of that profile's CLIP)."""
    p = get_profile(profile)
    return LLMConfig(
        n_embd=p.pick(smoke=32, default=128, full=256),
        n_layer=p.pick(smoke=1, default=4, full=6),
        n_head=p.pick(smoke=2, default=4, full=8),
        mapper_hidden=p.pick(smoke=64, default=256, full=512),
        train=TrainConfig(steps=p.pick(smoke=30, default=3000, full=20_000),
                          batch_size=p.pick(smoke=32, default=64, full=256),
                          lr=p.pick(smoke=3e-3, default=1e-3, full=5e-4),
                          warmup_steps=p.pick(smoke=5, default=100, full=500)),
        n_train=p.pick(smoke=512, default=20_000, full=200_000),
        clip=clip_stage.default_config(p).as_dict(),
    )


class PrefixMapper(ModelMixin, ConfigMixin):
    """ClipCap's mapping network: a CLIP embedding (plus a task vector) to GPT-2 prefix embeddings."""

    @register_to_config
    def __init__(self, clip_dim: int = 128, n_embd: int = 128, prefix_length: int = 4,
                 hidden_dim: int = 256, n_tasks: int = len(TASKS), patch_dim: int | None = None) -> None:
        super().__init__()
        self.task = nn.Embedding(n_tasks, clip_dim)
        self.mlp = nn.Sequential(nn.Linear(clip_dim, hidden_dim), nn.Tanh(),
                                 nn.Linear(hidden_dim, prefix_length * n_embd))
        # CLIP's image patch tokens (width patch_dim) to GPT-2's width; GPT-2's positions order them.
        self.patches = nn.Linear(patch_dim, n_embd) if patch_dim else None

    def project_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """GPT-2 input vectors (B, P, n_embd) of CLIP image patch tokens (B, P, patch_dim)."""
        if self.patches is None:
            raise ValueError("this prefix mapper was built without patch reading (patch_dim=None)")
        return self.patches(patches * patches.shape[-1] ** 0.5)  # unit-norm tokens up to N(0, 1) size

    def forward(self, z: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Prefix embeddings (B, prefix_length, n_embd) of unit CLIP embeddings ``z`` (B, clip_dim)."""
        # CLIP embeddings are unit vectors: scale them up to the task vectors' N(0, 1) size.
        h = self.mlp(z * z.shape[-1] ** 0.5 + self.task(task))
        return h.view(len(z), self.config.prefix_length, self.config.n_embd)


class ClipCapLM(nn.Module):
    """GPT-2 with its prefix mapper: the trainable part of stage 2."""

    def __init__(self, gpt2: nn.Module, mapper: PrefixMapper) -> None:
        super().__init__()
        self.gpt2, self.mapper = gpt2, mapper

    def prefix_embeds(self, z: torch.Tensor, task: torch.Tensor, context: Context | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """What generation starts from: the prefix, the ``context`` (if any) and ``<bos>``, with their mask.

        Returns ``(embeds (B, T, n_embd), attention_mask (B, T))``; the mask is 0 at the
        context's padding.
        """
        prefix = self.mapper(z, task)
        parts, masks = [prefix], [torch.ones(prefix.shape[:2], dtype=torch.long, device=z.device)]
        if context is not None:
            embeds, mask = self.context_embeds(context)
            parts.append(embeds)
            masks.append(mask)
        bos = self.gpt2.get_input_embeddings()(torch.full((len(z), 1), BOS_ID, device=z.device))
        return torch.cat([*parts, bos], dim=1), torch.cat([*masks, masks[0][:, :1]], dim=1)

    def context_embeds(self, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """GPT-2 input vectors of a :class:`Context` and their mask (B, C): prompt tokens or projected patches."""
        wte = self.gpt2.get_input_embeddings()
        rows = []
        if context.prompt_ids is not None:
            rows.append((wte(context.prompt_ids), (context.prompt_ids != PAD_ID).long()))
        if context.patches is not None:
            p = self.mapper.project_patches(context.patches)
            rows.append((p, torch.ones(p.shape[:2], dtype=torch.long, device=p.device)))
        if len(rows) == 1:
            return rows[0]
        # A mixed batch: each row reads its own kind, padded to the longer of the two.
        width = max(e.shape[1] for e, _ in rows)
        (pe, pm), (ie, im) = [(F.pad(e, (0, 0, 0, width - e.shape[1])), F.pad(m, (0, width - m.shape[1])))
                              for e, m in rows]
        is_image = context.is_image[:, None]
        return torch.where(is_image[..., None], ie, pe), torch.where(is_image, im, pm)

    def forward(self, z: torch.Tensor, task: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, context: Context | None = None, per_row: bool = False) -> torch.Tensor:
        """Mean cross-entropy of the description tokens (``input_ids`` = ``<bos>`` description ``<eos>`` pads).

        With ``per_row`` it returns each row's summed negative log-likelihood (B,), -log q(D | prefix):
        what a policy gradient weighs (:mod:`llmimg.joint`'s reward regime).
        """
        start, start_mask = self.prefix_embeds(z, task, context)
        start, start_mask = start[:, :-1], start_mask[:, :-1]  # <bos> comes with input_ids
        embeds = torch.cat([start, self.gpt2.get_input_embeddings()(input_ids)], dim=1)
        mask = torch.cat([start_mask, attention_mask.long()], dim=1)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, 0] = -100  # <bos> is given, not predicted
        labels = torch.cat([labels.new_full(start.shape[:2], -100), labels], dim=1)
        if not per_row:
            return self.gpt2(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask),
                             labels=labels).loss
        logits = self.gpt2(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask)).logits
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=-100,
                              reduction="none")
        return nll.sum(1)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (padding gets 0): what ``generate`` derives from the mask."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0).masked_fill(attention_mask == 0, 0)


@torch.no_grad()
def greedy_decode(lm: Any, z: torch.Tensor, tasks: torch.Tensor, context: Any = None, n_new: int = CONTEXT_LENGTH,
                  use_cache: bool = True) -> torch.Tensor:
    """Greedy token ids ``(B, n_new)`` of a :class:`ClipCapLM`, written token by token, with or without the KV cache.

    Without the cache every step feeds the whole sequence again (prefix and all tokens so
    far), which is what "no KV cache" costs; transformers' ``generate`` cannot show this,
    since it keeps the cache on when generating from ``inputs_embeds``. Both paths give the
    same tokens (notebook 04 writes this loop out; notebook 08 times it).
    """
    (x, mask), past, ids = lm.prefix_embeds(z, tasks, context), None, []
    for _ in range(n_new):
        out = lm.gpt2(inputs_embeds=x, attention_mask=mask, position_ids=positions(mask)[:, -x.shape[1]:],
                      past_key_values=past, use_cache=use_cache)
        next_id = out.logits[:, -1].argmax(-1)
        ids.append(next_id)
        new = lm.gpt2.get_input_embeddings()(next_id)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        past, x = (out.past_key_values, new) if use_cache else (None, torch.cat([x, new], 1))
    return torch.stack(ids, 1)


@dataclass
class Context:
    """What GPT-2 reads between the prefix and ``<bos>``: a prompt's token ids, CLIP patch tokens, or both kinds.

    ``prompt_ids`` (B, L) are ``<bos> prompt <eos>`` padded with ``<pad>``; ``patches``
    (B, P, width) are CLIP's image patch tokens. When both are given (a training batch
    mixing the two tasks), ``is_image`` (B,) says which one each row reads.
    """

    prompt_ids: torch.Tensor | None = None
    patches: torch.Tensor | None = None
    is_image: torch.Tensor | None = None

    def _map(self, fn: Any) -> Context:
        return Context(*(None if t is None else fn(t) for t in (self.prompt_ids, self.patches, self.is_image)))

    def rows(self, index: list[int]) -> Context:
        """The context of the rows ``index`` only."""
        return self._map(lambda t: t[index])

    def to(self, device: torch.device) -> Context:
        return self._map(lambda t: t.to(device))


def in_reading_order(descriptions: list[str]) -> list[str]:
    """Descriptions in reading order (:func:`~llmimg.data.reading_order`): what the generator was trained on.

    One that does not parse is returned as written, for the caller to see.
    """
    from llmimg.data import ParseError, reading_order

    out = []
    for d in descriptions:
        try:
            out.append(reading_order(d))
        except ParseError:
            out.append(d)
    return out


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Token ids ``(B, L)`` without the trailing columns that are ``<pad>`` in every row."""
    return ids[:, :int((ids != PAD_ID).sum(1).max())]


def task_ids(task: str, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The task token ids ``(n,)`` that tell the prefix mapper to upsample or to caption."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return torch.full((n,), TASKS.index(task), dtype=torch.long, device=device)


class ShapesLLM:
    """The trained stage 2 with its CLIP: :meth:`upsample` prompts and :meth:`caption` images."""

    def __init__(self, lm: ClipCapLM, tokenizer: Any, clip: clip_stage.ShapesCLIP, config: LLMConfig,
                 path: Path | None = None, history: list[dict] | None = None) -> None:
        self.lm, self.tokenizer, self.clip, self.config, self.path = lm.eval(), tokenizer, clip, config, path
        self.history = history or []

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @torch.no_grad()
    def generate(self, z: torch.Tensor, task: str, *, context: Context | None = None, do_sample: bool = True,
                 temperature: float = 1.0, top_k: int | None = None, num_beams: int = 1, seed: int | None = None,
                 use_cache: bool = True, max_new_tokens: int = CONTEXT_LENGTH) -> list[str]:
        """Descriptions written from CLIP embeddings ``z`` (B, embed_dim) with transformers' ``generate``.

        ``context`` is what GPT-2 reads beside the prefix (:meth:`context` builds it
        from prompts or images; required when the model was trained to read one).
        ``do_sample=False`` is greedy (or beam search with ``num_beams > 1``);
        sampling takes ``temperature`` and ``top_k``. ``seed`` seeds torch's global
        generator first (``generate`` samples from it). ``use_cache`` is passed on, but
        transformers 5 keeps the KV cache on when generating from ``inputs_embeds`` (as a
        prefix needs); notebook 04 shows this and times a loop without the cache.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {num_beams}")
        tasks = task_ids(task, len(z), self.device)
        if self.config.read_context and context is None:
            raise ValueError("this LLM reads a context beside the prefix: pass context=llm.context(prompts=...) "
                             "or context=llm.context(images=...)")
        if seed is not None:
            torch.manual_seed(seed)
        z = z.to(self.device)
        embeds, mask = self.lm.prefix_embeds(z, tasks, None if context is None else context.to(z.device))
        options: dict[str, Any] = {"do_sample": do_sample, "num_beams": num_beams}
        if do_sample:
            options.update(temperature=temperature, top_k=top_k or 0)
        ids = self.lm.gpt2.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=EOS_ID,
            pad_token_id=PAD_ID, use_cache=use_cache, **options)
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

    def upsample(self, prompts: list[str], *, max_tries: int = MAX_TRIES, **kwargs: Any) -> list[str]:
        """Full descriptions for typed prompts (checked: unknown words raise :class:`~llmimg.text.UnknownWordsError`).

        Sampled descriptions go through a checker: one that does not parse, or that
        contradicts its prompt, is drawn again, up to ``max_tries`` draws in all
        (``max_tries=1``: the model's raw samples). See :meth:`upsample_from`.
        """
        prompts = [check_prompt(self.tokenizer, p) for p in prompts]
        return self.upsample_from(self.clip.encode_text(prompts), prompts, max_tries=max_tries, **kwargs)

    def upsample_from(self, z: torch.Tensor, prompts: list[str], *, max_tries: int = MAX_TRIES,
                      seed: int | None = None, return_draws: bool = False,
                      **kwargs: Any) -> list[str] | tuple[list[str], list[int]]:
        """Descriptions of (already checked) ``prompts`` whose CLIP embeddings are ``z``, with the checker.

        **Rejection sampling.** The model samples a description ``d ~ q(d | prompt)``; if
        ``d`` does not parse or does not keep every attribute the prompt states, it is
        thrown away and drawn again. What is kept is a sample of ``q`` restricted to the
        faithful descriptions, ``q(d | prompt, faithful)``: the open attributes keep the
        model's distribution, renormalised. After ``max_tries`` draws the last one is
        kept, faithful or not. Greedy decoding (``do_sample=False``) is deterministic, so
        it is drawn once. ``seed`` seeds draw ``k`` with ``seed + k``. With
        ``return_draws`` it also returns how many draws each prompt took.

        The model names the objects in the prompt's order (``config.prompt_order``); each
        description that parses is then rewritten in reading order, the order the
        generator was trained on (:func:`~llmimg.data.reading_order`).
        """
        from llmimg.data import faithful

        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        context = self.context(prompts=prompts)
        out = self.generate(z, "upsample", context=context, seed=seed, **kwargs)
        draws = [1] * len(out)
        tries = max_tries if kwargs.get("do_sample", True) else 1
        for attempt in range(1, tries):
            redo = [i for i, (p, d) in enumerate(zip(prompts, out)) if not faithful(p, d)]
            if not redo:
                break
            again = self.generate(z[redo], "upsample", context=None if context is None else context.rows(redo),
                                  seed=None if seed is None else seed + attempt, **kwargs)
            for i, d in zip(redo, again):
                out[i], draws[i] = d, draws[i] + 1
        out = in_reading_order(out)
        return (out, draws) if return_draws else out

    def caption(self, images: torch.Tensor | np.ndarray, **kwargs: Any) -> list[str]:
        """Descriptions of images (uint8 (B, H, W, 3) or [0, 1] float (B, 3, H, W)); greedy by default."""
        kwargs.setdefault("do_sample", False)
        return self.generate(self.clip.encode_image(images).to(self.device), "caption",
                             context=self.context(images=images), **kwargs)

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write a ``save_pretrained`` GPT-2 folder with ``prefix_mapper/``, ``llmimg.json`` and a tokenizer.

        The tokenizer is :func:`~llmimg.text.for_text_generation`'s, so transformers'
        text-generation pipeline continues prompts.
        """
        path = Path(path)
        self.lm.gpt2.save_pretrained(path)
        for_text_generation(self.tokenizer).save_pretrained(path)
        self.lm.mapper.save_pretrained(path / "prefix_mapper")
        clip_folder = self.clip.path.name if self.clip.path is not None else None
        write_manifest(path, "llm", self.config.as_dict(), clip_folder=clip_folder,
                       history=self.history, metrics=metrics or {})
        return path


def build(config: LLMConfig, clip: clip_stage.ShapesCLIP) -> ShapesLLM:
    """An untrained GPT-2 and prefix mapper sized by ``config``, for ``clip``'s embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    reads = max(clip.n_patches, CONTEXT_LENGTH) if config.read_context else 0  # the longest context
    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(clip.tokenizer), n_positions=config.prefix_length + reads + 1 + CONTEXT_LENGTH,
        n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID))
    gpt2.generation_config.pad_token_id = PAD_ID
    mapper = PrefixMapper(clip_dim=clip.embed_dim, n_embd=config.n_embd, prefix_length=config.prefix_length,
                          hidden_dim=config.mapper_hidden, patch_dim=clip.patch_width if config.read_context else None)
    return ShapesLLM(ClipCapLM(gpt2, mapper), clip.tokenizer, clip, config)


def load(path: str | Path, clip: clip_stage.ShapesCLIP | None = None) -> ShapesLLM:
    """Load an LLM saved by :meth:`ShapesLLM.save`; its CLIP comes from the cache folder beside it unless given."""
    from transformers import GPT2LMHeadModel

    path = require_folder(path, FILES, "an LLM checkpoint", RETRAIN)
    manifest = read_manifest(path)
    if clip is None:
        if not manifest.get("clip_folder"):
            raise CheckpointError(f"{path.name!r} does not say which CLIP it was trained with; pass clip=")
        clip = clip_stage.load(path.parent / manifest["clip_folder"])
    try:
        gpt2 = GPT2LMHeadModel.from_pretrained(path)
        mapper = PrefixMapper.from_pretrained(path / "prefix_mapper")
    except Exception as err:  # safetensors, JSON and shape errors all mean a damaged folder
        raise CheckpointError(f"{path.name!r} is not a loadable LLM checkpoint ({err}); retrain it with "
                              f"`{RETRAIN}`") from err
    if mapper.config.clip_dim != clip.embed_dim:
        raise CheckpointError(f"{path.name!r} expects {mapper.config.clip_dim}-d CLIP embeddings, "
                              f"the CLIP given has {clip.embed_dim}")
    # Models trained before the context (or the prompt order) existed lack the keys.
    config = LLMConfig.from_dict({"read_context": False, "prompt_order": False, **manifest["config"]})
    # The folder's tokenizer is set up for text generation (no <eos> after a prompt); the
    # library reads whole texts, <bos> words <eos>, with the CLIP's tokenizer, as in training.
    return ShapesLLM(ClipCapLM(gpt2, mapper), clip.tokenizer, clip, config, path, manifest.get("history"))


# -- training ------------------------------------------------------------------------
class LLMBank:
    """Training examples: frozen-CLIP features of ``n`` scenes' images and prompts, and their descriptions.

    With ``read_context`` it also keeps each prompt's token ids and each image's CLIP
    patch tokens (in half precision: 20,000 images of 16 patches take 80 MB). With
    ``prompt_order`` the upsampling targets name the objects in the prompt's order.
    """

    def __init__(self, n: int, clip: clip_stage.ShapesCLIP, seed: int = 0, split: str = "train",
                 chunk: int = 1000, read_context: bool = True, prompt_order: bool = True) -> None:
        from llmimg.data import ShapesWorld, describe_in_prompt_order

        samples = list(ShapesWorld(seed=seed).samples(n, split))
        images, prompts, patches = [], [], []
        for start in range(0, n, chunk):
            part = samples[start:start + chunk]
            pixels = np.stack([s.image for s in part])
            images.append(clip.encode_image(pixels).cpu())
            prompts.append(clip.encode_text([s.prompt for s in part], check=False).cpu())
            if read_context:
                patches.append(clip.patch_tokens(pixels).cpu().half())
        self.image_z, self.prompt_z = torch.cat(images), torch.cat(prompts)
        self.patches = torch.cat(patches) if read_context else None
        self.prompt_ids = encode(clip.tokenizer, [s.prompt for s in samples], check=False)["input_ids"]
        enc = encode(clip.tokenizer, [s.description for s in samples], check=False)
        self.ids, self.mask = enc["input_ids"], enc["attention_mask"]
        # Upsampling targets: the description, or (prompt_order) the same description
        # with its objects in the prompt's order; captions keep reading order.
        self.upsample_ids, self.upsample_mask = self.ids, self.mask
        if prompt_order:
            enc = encode(clip.tokenizer, [describe_in_prompt_order(s.scene, s.prompt) for s in samples],
                         check=False)
            self.upsample_ids, self.upsample_mask = enc["input_ids"], enc["attention_mask"]

    def batch(self, step: int, batch_size: int, caption_rate: float, seed: int = 0) -> dict[str, Any]:
        """Training batch ``step``: each row captions (with probability ``caption_rate``) or upsamples."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(self.ids), (batch_size,), generator=g)
        task = (torch.rand(batch_size, generator=g) < caption_rate).long()  # 1 = caption
        return self.rows(idx, task)

    def rows(self, idx: torch.Tensor, task: torch.Tensor) -> dict[str, Any]:
        """The batch of examples ``idx``, each captioning (``task`` 1) or upsampling (0)."""
        is_caption = task[:, None] == 1
        z = torch.where(is_caption, self.image_z[idx], self.prompt_z[idx])
        ids = torch.where(is_caption, self.ids[idx], self.upsample_ids[idx])
        mask = torch.where(is_caption, self.mask[idx], self.upsample_mask[idx])
        length = int(mask.sum(1).max())  # drop the columns that are padding in every row: half the compute
        out: dict[str, Any] = {"z": z, "task": task, "input_ids": ids[:, :length],
                               "attention_mask": mask[:, :length]}
        if self.patches is not None:
            out["context"] = Context(trim_padding(self.prompt_ids[idx]), self.patches[idx].float(),
                                     task == TASKS.index("caption"))
        return out


def train(config: LLMConfig, clip: clip_stage.ShapesCLIP, *, work_dir: str | Path | None = None,
          progress: bool = True) -> ShapesLLM:
    """Train GPT-2 and the prefix mapper on both tasks with the CLIP frozen; returns the model (not saved)."""
    llm = build(config, clip)
    bank = LLMBank(config.n_train, clip, seed=config.seed, read_context=config.read_context,
                   prompt_order=config.prompt_order)

    def loss(model: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        context = b.get("context")
        return model(b["z"], b["task"], b["input_ids"], b["attention_mask"],
                     None if context is None else context.to(b["z"].device))

    result = fit(llm.lm, lambda s: bank.batch(s, config.train.batch_size, config.caption_rate, config.seed),
                 loss, config.train, work_dir=work_dir, desc="LLM", progress=progress,
                 meta={"llm": config.as_dict()})
    return ShapesLLM(result.model, clip.tokenizer, clip, config, history=result.history)


def get(profile: str | Profile | None = None, *, force: bool = False, progress: bool = True,
        config: LLMConfig | None = None) -> ShapesLLM:
    """The profile's trained LLM (and its CLIP) from the cache, trained first if not there."""
    config = config or default_config(profile)
    clip = clip_stage.get(profile, progress=progress, config=clip_stage.ClipConfig.from_dict(config.clip))

    def build_into(out: Path, work: Path) -> None:
        llm = train(config, clip, work_dir=work, progress=progress)
        llm.save(out, metrics=evaluate(llm, n=get_profile(profile).pick(smoke=50, default=500, full=1000)))

    return load(cached("llm", config.as_dict(), build_into, profile=profile, force=force), clip)


# -- evaluation ----------------------------------------------------------------------
OPEN_ATTRIBUTES = ("colour", "size", "position")


def open_attributes(prompt: str, scene: Any) -> list[tuple[str, str]]:
    """(attribute, value) of every attribute ``scene`` fills in that ``prompt`` leaves open.

    Prompt objects are paired with the scene's objects by the first assignment that
    keeps every stated attribute; an unfaithful scene gives nothing.
    """
    from llmimg.data import parse_prompt

    partials = parse_prompt(prompt)
    if len(partials) != len(scene):
        return []
    for perm in itertools.permutations(scene.objects):
        if all(p.matches(o) for p, o in zip(partials, perm)):
            return [(a, getattr(o, a)) for p, o in zip(partials, perm) for a in OPEN_ATTRIBUTES
                    if getattr(p, a) is None]
    return []


def total_variation(a: Counter, b: Counter) -> float:
    """Total-variation distance between two empirical distributions given as counts."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return float("nan")
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def upsampling_scores(prompts: list[str], outputs: list[str], seed: int = 0) -> dict[str, Any]:
    """Validity, faithfulness and open-attribute distribution match of descriptions written for ``prompts``.

    The distribution is compared with the oracle upsampler (:func:`~llmimg.data.complete_prompt`)
    on the same prompts, by the total-variation distance per open attribute;
    ``open_attribute_tv_floor`` is the distance between two oracle runs of the same
    size, the part of the number that is sampling noise.
    """
    from llmimg.data import ParseError, complete_prompt, parse_description, parse_prompt, prompt_matches

    rng = np.random.default_rng(seed)
    valid = faithful = 0
    model, oracle, oracle2 = Counter(), Counter(), Counter()
    by_count: dict[str, list[bool]] = {}
    for prompt, text in zip(prompts, outputs):
        kept = by_count.setdefault(str(len(parse_prompt(prompt))), [])
        kept.append(False)
        oracle.update(open_attributes(prompt, complete_prompt(prompt, rng)))
        oracle2.update(open_attributes(prompt, complete_prompt(prompt, rng)))
        try:
            scene = parse_description(text)
        except ParseError:
            continue
        valid += 1
        if prompt_matches(prompt, scene):
            faithful += 1
            kept[-1] = True
            model.update(open_attributes(prompt, scene))
    by_attr = {a: total_variation(Counter({k: v for k, v in model.items() if k[0] == a}),
                                  Counter({k: v for k, v in oracle.items() if k[0] == a})) for a in OPEN_ATTRIBUTES}
    floor = {a: total_variation(Counter({k: v for k, v in oracle2.items() if k[0] == a}),
                                Counter({k: v for k, v in oracle.items() if k[0] == a})) for a in OPEN_ATTRIBUTES}
    n = len(prompts)
    return {"valid_rate": valid / n, "faithfulness": faithful / n,
            "faithfulness_by_objects": {k: float(np.mean(v)) for k, v in sorted(by_count.items())},
            "open_attribute_tv": _mean(by_attr.values()),
            "open_attribute_tv_floor": _mean(floor.values()),
            "open_attribute_tv_per_attribute": by_attr}


def _mean(values: Any) -> float:
    """Mean of the numbers that are not NaN; NaN if there are none (no open attribute was ever filled in)."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def caption_scores(scenes: list[Any], outputs: list[str]) -> dict[str, float]:
    """Share of captions that parse, and that describe their image exactly (every attribute right)."""
    from llmimg.data import ParseError, parse_description

    valid = exact = 0
    for scene, text in zip(scenes, outputs):
        try:
            written = parse_description(text)
        except ParseError:
            continue
        valid += 1
        exact += written == scene
    return {"caption_valid_rate": valid / len(scenes), "caption_accuracy": exact / len(scenes)}


def evaluate(llm: ShapesLLM, n: int = 500, split: str = "val", seed: int = 0,
             batch_size: int = 250) -> dict[str, Any]:
    """The LLM metrics of ``llmimg eval llm`` on ``n`` held-out scenes: upsampling (sampled) and captioning (greedy).

    Upsampling is scored as the upsampler works, with its checker (redraws of
    descriptions that contradict the prompt, :meth:`ShapesLLM.upsample_from`), and, under
    ``model_*`` keys, on the model's first draws alone. Faithfulness is also split by
    the prompt's number of objects (``*_one_object``, ``*_two_objects``);
    ``upsample_draws`` is the mean number of draws per prompt. Captioning is measured
    again on ``n`` scenes of the compositional ``heldout`` split
    (``heldout_caption_accuracy``). Every rate has its standard error (``<key>_se``).
    """
    from llmimg.data import ShapesWorld
    from llmimg.evaluation import standard_error

    def captions(samples: list[Any]) -> list[str]:
        return [c for start in range(0, len(samples), batch_size)
                for c in llm.caption(np.stack([s.image for s in samples[start:start + batch_size]]))]

    def upsample(max_tries: int) -> tuple[list[str], list[int]]:
        parts = [llm.upsample(prompts[start:start + batch_size], seed=seed + start, max_tries=max_tries,
                              return_draws=True) for start in range(0, n, batch_size)]
        return [d for texts, _ in parts for d in texts], [k for _, draws in parts for k in draws]

    samples = list(ShapesWorld(seed=seed).samples(n, split))
    heldout = list(ShapesWorld(seed=seed).samples(n, "heldout"))
    prompts = [s.prompt for s in samples]
    t0 = time.perf_counter()
    (checked, draws), (first, _) = upsample(MAX_TRIES), upsample(1)  # same seeds: the checker's first draws
    written, written_heldout = captions(samples), captions(heldout)
    seconds = time.perf_counter() - t0
    by_objects = Counter(len(s.scene) for s in samples)
    counts = {"one_object": by_objects[1], "two_objects": by_objects[2]}
    rates: dict[str, float] = {}
    for prefix, outputs in (("", checked), ("model_", first)):
        scores = upsampling_scores(prompts, outputs, seed=seed)
        rates[f"{prefix}valid_rate"], rates[f"{prefix}faithfulness"] = scores["valid_rate"], scores["faithfulness"]
        for key, count in (("one_object", "1"), ("two_objects", "2")):
            rates[f"{prefix}faithfulness_{key}"] = scores["faithfulness_by_objects"].get(count, float("nan"))
        if not prefix:
            tv = {k: scores[k] for k in ("open_attribute_tv", "open_attribute_tv_floor",
                                         "open_attribute_tv_per_attribute")}
    rates.update(caption_scores([s.scene for s in samples], written))
    rates["heldout_caption_accuracy"] = caption_scores([s.scene for s in heldout], written_heldout)["caption_accuracy"]

    def n_of(key: str) -> int:
        return next((c for k, c in counts.items() if key.endswith(k)), n)

    errors = {f"{k}_se": standard_error(v, n_of(k)) if n_of(k) and not np.isnan(v) else float("nan")
              for k, v in rates.items()}
    return {**rates, **errors, **tv, "upsample_draws": float(np.mean(draws)), "n_one_object": by_objects[1],
            "n_two_objects": by_objects[2], "n": n, "seconds": seconds}


__all__ = ["ClipCapLM", "Context", "LLMBank", "LLMConfig", "OPEN_ATTRIBUTES", "PrefixMapper", "ShapesLLM", "TASKS",
           "build", "caption_scores", "default_config", "evaluate", "get", "greedy_decode", "in_reading_order", "load",
           "open_attributes", "positions", "task_ids", "total_variation", "train", "upsampling_scores"]
