"""The pretrained world's three models, each loaded from a hub id or from a local folder.

* CLIP: open_clip ``ViT-B-32`` with a pretrained tag (:class:`PretrainedCLIP`), for text
  and image features, CLIPScore and re-ranking;
* the upsampling LLM: any ``AutoModelForCausalLM`` (prompted through its chat template,
  or with a plain few-shot text when it has none, as ``gpt2``) or ``AutoModelForSeq2SeqLM``
  (``t5-base``) that writes detailed descriptions (:class:`DescriptionWriter`);
* the generator: a Stable Diffusion pipeline through diffusers' ``AutoPipelineForText2Image``.

Every loader takes either a hub id (downloaded once into the Hugging Face cache) or a
local folder (a ``save_pretrained`` folder; for CLIP, open_clip's ``local-dir`` layout).
A hub model that cannot be fetched raises :class:`PretrainedUnavailableError` with one
line naming the model and what to do; a local folder that does not load raises
:class:`~llmimg.core.store.CheckpointError`.

Precision: float16 on CUDA, float32 elsewhere; float16 on the CPU is refused. With
``offload=True`` the weights wait on the CPU and each model visits the GPU only while
it runs (diffusers' ``enable_model_cpu_offload`` for the generator).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from llmimg.core import seeding
from llmimg.core.config import get_device
from llmimg.core.sampling import RowSampler
from llmimg.core.store import CheckpointError
from llmimg.core.versions import diffusers_dtype
from llmimg.pipelines.pretrained.rerank import check_rerank

# The hub commit each known model is loaded at, so a notebook run today and in a year gets the same weights.
# Sources: sd-turbo's head commit b261bac (huggingface.co/stabilityai/sd-turbo/tree/main; the full hash from
# .../tree/b261bac6fd2cf515557d5d0707481eafa0485ec2/vae, which holds the fp16 files); the Qwen, gpt2 and t5
# hashes are the ones public projects pin for these repositories. No SD 1.5 hash could be sourced: it loads
# "main". open_clip's pretrained tags name fixed weight files and take no revision.
REVISIONS: dict[str, str] = {
    "stabilityai/sd-turbo": "b261bac6fd2cf515557d5d0707481eafa0485ec2",
    "Qwen/Qwen2.5-0.5B-Instruct": "7ae557604adf67be50417f59c2c2f167def9a775",
    "Qwen/Qwen2.5-1.5B-Instruct": "989aa7980e4cf806f80c7fef2b1adb7bc71aa306",
    "openai-community/gpt2": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
    "google-t5/t5-base": "a9723ea7f1b39c1eae772870f3b547bf6ef7e6c1",
}
LLMS: dict[str, str] = {
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "gpt2": "openai-community/gpt2",
    "t5-base": "google-t5/t5-base",
}
GENERATORS: dict[str, dict[str, Any]] = {
    # sd-turbo is distilled for 1-4 steps without classifier-free guidance (its model card: 1 step, guidance 0).
    "sd-turbo": {"generator": "stabilityai/sd-turbo", "num_inference_steps": 1, "guidance_scale": 0.0},
    "sd-1.5": {"generator": "stable-diffusion-v1-5/stable-diffusion-v1-5", "num_inference_steps": 25,
               "guidance_scale": 7.5},
}
TO_DO = "run it where the hub can be reached (e.g. Colab; log in for gated models) or pass a local folder"


@dataclass(frozen=True)
class PretrainedConfig:
    """Which pretrained models the pipeline loads, and how it calls them by default.

    Each model is a hub id (loaded at its revision: by default the pinned one of
    :data:`REVISIONS`, else "main") or a local folder. :meth:`preset` picks them by
    short name from :data:`LLMS` and :data:`GENERATORS`. ``num_candidates`` descriptions
    are written per prompt and ``rerank`` says how one is kept (see
    :mod:`~llmimg.pipelines.pretrained.rerank`): ``"text"``, the one whose text CLIP finds
    closest to the prompt; ``"image"``, the one whose image CLIP finds closest (best-of-n);
    ``"none"``, the first (only one is written).
    """

    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"  # an open_clip tag ("openai", "laion2b_s34b_b79k", ...); None for a folder
    llm: str = LLMS["qwen2.5-0.5b"]
    llm_revision: str | None = None  # None: the pinned one of REVISIONS, else the hub's "main"
    generator: str = GENERATORS["sd-turbo"]["generator"]
    generator_revision: str | None = None
    generator_variant: str | None = "fp16"  # the hub's half-size weight files, fetched only for float16
    num_inference_steps: int = GENERATORS["sd-turbo"]["num_inference_steps"]
    guidance_scale: float = GENERATORS["sd-turbo"]["guidance_scale"]
    num_candidates: int = 4
    max_new_tokens: int = 77
    temperature: float = 0.7
    # "image": measured on ShapesWorld (notebook 09, `llmimg experiment reranking`), judging each candidate's
    # image beat judging its text by 10 points of all-correct, and the text judge did no better than none.
    rerank: str = "image"

    def __post_init__(self) -> None:
        check_rerank(self.rerank)

    @classmethod
    def preset(cls, llm: str = "qwen2.5-0.5b", generator: str = "sd-turbo", **overrides: Any) -> PretrainedConfig:
        """The config of a named LLM (a key of :data:`LLMS`) and generator (of :data:`GENERATORS`), plus overrides."""
        for name, table in ((llm, LLMS), (generator, GENERATORS)):
            if name not in table:
                raise ValueError(f"unknown model {name!r}; choose one of {', '.join(table)} or set the hub id yourself")
        return replace(cls(), llm=LLMS[llm], **GENERATORS[generator], **overrides)


class PretrainedUnavailableError(RuntimeError):
    """A hub model that cannot be fetched here (offline, not cached, gated, unknown); one line says what to do."""


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_precision(device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                      offload: bool = False) -> tuple[torch.device, torch.dtype]:
    """The device to compute on (see :func:`llmimg.core.config.get_device`) and the dtype of the weights.

    ``dtype`` defaults to float16 on CUDA and float32 elsewhere. float16 on the CPU is
    refused with a ValueError: many CPU operations have no fast (or no) half-precision
    kernel. ``offload`` needs a CUDA device to offload to.
    """
    device = get_device(device)
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype.lower()]
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 on the CPU is refused: it is slow or unsupported there; use float32 (the CPU "
                         "default) or bfloat16, or run on a GPU")
    if offload and device.type != "cuda":
        raise ValueError(f"offload=True keeps the models on the CPU and moves each to the GPU while it runs: it "
                         f"needs a CUDA device, got {str(device)!r}")
    return device, dtype


def is_local(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a local folder (else it is read as a hub id)."""
    return Path(source).expanduser().is_dir()


def revision_of(model: str, revision: str | None = None) -> str | None:
    """The revision to load ``model`` at: ``revision`` if given, else its pinned one, else the hub's "main".

    A local folder has none (``None``).
    """
    if is_local(model):
        return None
    return revision or REVISIONS.get(model, "main")


def _reason(err: BaseException) -> str:
    """Why a hub download failed, in words, from the huggingface_hub error anywhere in the chain."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    reasons = [(GatedRepoError, "the model is gated: accept its terms on its hub page and log in"),
               (RepositoryNotFoundError, "no such model on the hub, or a private one: check the id or log in"),
               (RevisionNotFoundError, "the hub has no such revision"),
               (HFValidationError, "neither a local folder nor a valid hub id"),
               (LocalEntryNotFoundError, "not in the local cache and the hub cannot be reached "
                                         "(offline, or HF_HUB_OFFLINE=1)")]
    chain, seen = [], err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for kind, reason in reasons:
        if any(isinstance(e, kind) for e in chain):
            return reason
    return _error_line(err)


def _error_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _loading(what: str, source: str, revision: str | None = None) -> Iterator[None]:
    """Turn a failed load into one line: PretrainedUnavailableError for a hub id, CheckpointError for a folder.

    ``from None`` keeps the libraries' long tracebacks out of the notebook; the original
    error stays in ``__context__`` for debugging.
    """
    try:
        yield
    except Exception as err:
        if is_local(source):
            raise CheckpointError(f"the folder {str(source)!r} is not a complete {what} ({_error_line(err)})") from None
        if not isinstance(err, OSError):  # huggingface_hub's and the loaders' download errors are all OSErrors
            raise
        at = f" at revision {revision[:12]}" if revision and revision != "main" else ""
        raise PretrainedUnavailableError(f"cannot load the {what} {source!r}{at}: {_reason(err)}; {TO_DO}") from None


class _OnDevice:
    """A model that computes on ``device``; with ``offload`` it waits on the CPU and visits the device while it runs."""

    def __init__(self, model: torch.nn.Module, device: torch.device, offload: bool) -> None:
        self.model = model.eval().to("cpu" if offload else device)
        self.device, self.offload = device, offload

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights are held in."""
        return next(self.model.parameters()).dtype

    @contextmanager
    def running(self) -> Iterator[None]:
        """The model on its device for the duration (moved there and back with ``offload``)."""
        if self.offload:
            self.model.to(self.device)
        try:
            yield
        finally:
            if self.offload:
                self.model.to("cpu")


class PretrainedCLIP(_OnDevice):
    """An open_clip CLIP with its tokenizer and image transform: features, CLIPScore and re-ranking."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor],
                 preprocess: Callable[[Any], torch.Tensor], device: torch.device, offload: bool = False) -> None:
        super().__init__(model, device, offload)
        self.tokenizer, self.preprocess = tokenizer, preprocess

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text features ``(N, D)``, float32 on the CPU."""
        with self.running():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float().cpu()

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Unit-length image features ``(N, D)`` of PIL images (what the pipeline returns), float32 on the CPU."""
        with self.running():
            pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)
            return self.model.encode_image(pixels, normalize=True).float().cpu()

    def score(self, images: Sequence[Any], texts: Sequence[str]) -> torch.Tensor:
        """CLIPScore of each image with its text: ``100 * max(cos, 0)``, as torchmetrics computes it; shape ``(N,)``."""
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images for {len(texts)} texts")
        return 100 * (self.encode_images(images) * self.encode_text(texts)).sum(-1).clamp(min=0)

    def rank(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
        """For each prompt, its candidate closest to it in CLIP space, and all similarities ``(B, n)``.

        This is CLIP's honest part in the pretrained pipeline: the LLM may drift from the
        prompt, and the candidate that CLIP finds nearest to it keeps most of what it says.
        """
        n = len(candidates[0])
        if len(candidates) != len(prompts) or any(len(c) != n for c in candidates):
            raise ValueError("expected the same number of candidates for every prompt")
        z_prompt = self.encode_text(prompts)
        z_cand = self.encode_text([c for cs in candidates for c in cs]).view(len(prompts), n, -1)
        similarity = torch.einsum("bd,bnd->bn", z_prompt, z_cand)
        best = similarity.argmax(dim=1).tolist()
        return [cs[i] for cs, i in zip(candidates, best)], similarity


# The request the LLM reads. Models with a chat template get it as the user's message; seq2seq models read it as is.
INSTRUCTION = ("Rewrite this image prompt as one detailed description of the picture, in a single sentence of at "
               "most 50 words. Keep everything the prompt says (every object, count, colour, position and style) "
               "and add concrete visual details. Reply with the description only.\nPrompt: {prompt}")
# Models without a chat template (gpt2) are not instruction-tuned: they continue a pattern instead.
FEW_SHOT = ("Short image prompts, each followed by a detailed description of the same picture.\n"
            "Prompt: a cat on a sofa\n"
            "Description: a fluffy ginger cat asleep on a green velvet sofa in a sunlit living room, soft morning "
            "light, photograph\n"
            "Prompt: a red car in the rain\n"
            "Description: a shiny red vintage sports car parked on a wet cobblestone street at dusk, rain drops, "
            "reflections of street lamps, cinematic\n"
            "Prompt: {prompt}\nDescription:")


class DescriptionWriter(_OnDevice):
    """A pretrained language model that turns a short prompt into detailed descriptions of the picture.

    ``kind`` says how it is prompted: ``"chat"`` (a causal LM with a chat template, e.g.
    Qwen2.5-Instruct), ``"plain"`` (a causal LM without one, e.g. gpt2: a few-shot text)
    or ``"seq2seq"`` (e.g. t5-base: the instruction as input).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, offload: bool = False) -> None:
        super().__init__(model, device, offload)
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:  # gpt2 has none; batches need one
            tokenizer.pad_token = tokenizer.eos_token
        if self.kind != "seq2seq":
            tokenizer.padding_side = "left"  # a decoder continues the last token: pad before the prompt

    @property
    def kind(self) -> str:
        """``"seq2seq"``, ``"chat"`` or ``"plain"``: how the model is prompted (see the class)."""
        if self.model.config.is_encoder_decoder:
            return "seq2seq"
        return "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"

    def request(self, prompt: str) -> str:
        """The exact text the model reads for ``prompt``."""
        if self.kind == "chat":
            message = {"role": "user", "content": INSTRUCTION.format(prompt=prompt)}
            return self.tokenizer.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
        return (INSTRUCTION if self.kind == "seq2seq" else FEW_SHOT).format(prompt=prompt)

    @torch.no_grad()
    def write(self, prompts: Sequence[str], num_candidates: int = 1, *, seeds: Sequence[int] | None = None,
              max_new_tokens: int = 77, temperature: float = 0.7, top_p: float = 0.95) -> list[list[str]]:
        """``num_candidates`` sampled descriptions for each prompt (one list per prompt).

        Candidate j of prompt k samples from the stream ``(seeds[k], "describe", j)``
        (:class:`~llmimg.core.sampling.RowSampler`), so it depends on that prompt and seed
        alone; ``seeds=None`` draws fresh ones. A candidate that comes out empty is
        replaced by the prompt itself, which the generator can still draw.
        """
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"num_candidates must be a whole number of at least 1, got {num_candidates!r}")
        seeds = [seeding.fresh_seed() for _ in prompts] if seeds is None else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        # One row per candidate (greedy search over RowSampler's scores samples; transformers does not repeat
        # rows for it). A chat template writes its own special tokens; adding them again would double a BOS.
        batch = self.tokenizer([self.request(p) for p in prompts for _ in range(num_candidates)],
                               return_tensors="pt", padding=True, add_special_tokens=self.kind != "chat")
        sampler = RowSampler([seeding.torch_generator(s, "describe", j) for s in seeds for j in range(num_candidates)],
                             temperature=temperature, top_p=top_p)
        with self.running():
            out = self.model.generate(**batch.to(self.device), do_sample=False, num_beams=1, logits_processor=[sampler],
                                      max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if self.kind != "seq2seq":
            out = out[:, batch["input_ids"].shape[1]:]  # a decoder's output starts with its input
        texts = [_first_line(t) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return [[t or p for t in texts[i * num_candidates:(i + 1) * num_candidates]] for i, p in enumerate(prompts)]


def _first_line(text: str) -> str:
    """The description alone: its first line (a few-shot model goes on with the next "Prompt:"), printable, unquoted."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = re.sub(r"^\s*description\s*:\s*", "", line, flags=re.IGNORECASE)
    return " ".join("".join(c for c in line if c.isprintable()).split()).strip("\"' ")


def load_clip(model: str = PretrainedConfig.clip_model, pretrained: str | None = PretrainedConfig.clip_pretrained,
              *, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
              offload: bool = False) -> PretrainedCLIP:
    """An open_clip CLIP: a model name with a pretrained tag (e.g. ``"ViT-B-32"``, ``"openai"``) or a local folder.

    A folder is in open_clip's ``local-dir`` layout (``open_clip_config.json`` and
    ``open_clip_model.safetensors``); ``pretrained`` is then unused.
    """
    import open_clip

    device, dtype = resolve_precision(device, dtype, offload)
    if is_local(model):
        name = f"local-dir:{Path(model).expanduser()}"
        with _loading("CLIP", model):
            net, _, preprocess = open_clip.create_model_and_transforms(name)
            tokenizer = open_clip.get_tokenizer(name)
    else:
        tag = open_clip.get_pretrained_cfg(model, pretrained or "")
        if not tag:
            known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none: check the model name"
            raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {model!r}; known tags: {known}")
        # Fetch first: open_clip itself would wrap a failed download in a RuntimeError with a long message.
        with _loading("CLIP", f"{model} ({pretrained})"):
            open_clip.download_pretrained(tag)
        # The OpenAI weights were trained with QuickGELU; open_clip's plain ViT-B-32 config would only warn.
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                   force_quick_gelu=bool(tag.get("quick_gelu")))
        tokenizer = open_clip.get_tokenizer(model)
    return PretrainedCLIP(net.to(dtype), tokenizer, preprocess, device, offload)


def load_writer(model: str = PretrainedConfig.llm, revision: str | None = None, *,
                device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                offload: bool = False) -> DescriptionWriter:
    """The upsampling LLM with its tokenizer, from a hub id (at :func:`revision_of`) or a ``save_pretrained`` folder.

    Encoder-decoder models (t5) load as ``AutoModelForSeq2SeqLM``, all others as
    ``AutoModelForCausalLM``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    device, dtype = resolve_precision(device, dtype, offload)
    revision = revision_of(model, revision)
    hub = {"revision": revision} if revision else {}
    with _loading("language model", model, revision):
        config = AutoConfig.from_pretrained(model, **hub)
        tokenizer = AutoTokenizer.from_pretrained(model, **hub)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        net = auto.from_pretrained(model, dtype=dtype, **hub)
    return DescriptionWriter(net, tokenizer, device, offload)


def load_generator(model: str = PretrainedConfig.generator, revision: str | None = None, *,
                   device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
                   offload: bool = False, variant: str | None = PretrainedConfig.generator_variant,
                   attention_slicing: bool = False) -> Any:
    """A Stable Diffusion pipeline (1.x/2.x family, e.g. sd-turbo) through ``AutoPipelineForText2Image``.

    ``model`` is a hub id (at :func:`revision_of`) or a ``save_pretrained`` folder.
    ``variant`` (``"fp16"``) fetches the hub's half-size files when the dtype is float16.
    ``attention_slicing`` computes attention in pieces to save memory; diffusers advises
    against it with PyTorch 2's fused attention (the default here), where it mostly slows
    things down, so it is off unless asked.
    """
    from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline

    device, dtype = resolve_precision(device, dtype, offload)
    revision = revision_of(model, revision)
    hub = {"revision": revision} if revision else {}
    if hub and variant and dtype == torch.float16:
        hub["variant"] = variant
    with _loading("image generator", model, revision):
        pipe = AutoPipelineForText2Image.from_pretrained(model, **diffusers_dtype(dtype), **hub)
    if not isinstance(pipe, StableDiffusionPipeline):
        raise ValueError(f"{model!r} is a {type(pipe).__name__}; llmimg.pipelines.pretrained drives Stable Diffusion 1.x/2.x "
                         f"pipelines (StableDiffusionPipeline), such as sd-turbo or SD 1.5")
    pipe.set_progress_bar_config(disable=True)
    if attention_slicing:
        pipe.enable_attention_slicing()
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


__all__ = ["DescriptionWriter", "FEW_SHOT", "GENERATORS", "INSTRUCTION", "LLMS", "REVISIONS", "PretrainedCLIP",
           "PretrainedConfig", "PretrainedUnavailableError", "TO_DO", "is_local", "load_clip", "load_generator",
           "load_writer", "resolve_precision", "revision_of"]
