"""The offline mode's writer: a small Qwen2 chat model trained on ShapesWorld to upsample prompts.

The pretrained pipeline's LLM slot takes any chat model that ``AutoModelForCausalLM`` and
``AutoTokenizer`` load (Qwen2.5-Instruct on Colab). Offline, no such model can be
downloaded, so this module trains one of the same class on the tiny world's data: a
``Qwen2ForCausalLM`` with a ChatML chat template, fitted with the plain next-token loss
on the assistant's turn of ``[user: models.INSTRUCTION with the prompt, assistant:
description]``, the very request :class:`~llmimg.pipelines.pretrained.models.DescriptionWriter`
sends. The pairs (prompt → description) are the ones the course's LLM stage learns from
(:class:`~llmimg.stages.llm.train.LLMBank`): ShapesWorld's training prompts, each with the
full description of its scene, objects in the prompt's order; so a description keeps what
the prompt states and fills in the rest the way the world does.

The tokenizer is Qwen2's kind (a byte-level BPE, which is what transformers loads for a
Qwen2 model whatever the folder holds) with merges learnt on the course's texts: each
word of theirs is one token, so a request is about 90 tokens, and a description decodes
byte for byte, exactly the text the course parses. Training runs the instruction, which
every request shares, once per batch (:func:`sequence_loss`).

:func:`get` gives the profile's trained writer from the model cache (trained and
evaluated first when missing, as the stages' ``get`` do); :func:`save_writer` writes it
into a folder that :func:`~llmimg.pipelines.pretrained.models.load_writer` reads.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from llmimg.core import seeding
from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ATTRIBUTES, ShapesWorld, describe_in_prompt_order, parse_prompt
from llmimg.core.evaluation import standard_error
from llmimg.core.store import (CheckpointError, Manifest, cache_key, cached, quiet_libraries, read_manifest,
                               require_folder, save_model, write_manifest)
from llmimg.core.training import StageConfig, TrainConfig, fit
from llmimg.pipelines.pretrained.models import INSTRUCTION, DescriptionWriter, PretrainedConfig, load_writer
from llmimg.pipelines.pretrained.tiny import CHAT_TEMPLATE
from llmimg.stages.llm.metrics import upsampling_scores
from llmimg.stages.llm.writer import prompt_seeds

STAGE = "writer"
FORMAT = 1  # bump when a change to this module changes what a trained writer is
RETRAIN = "llmimg train writer --force"
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END)  # ids 0 to 2, as Qwen's tokenizer numbers them in order
MAX_VOCAB = 2048  # more than the merges the corpus has: every word of it ends up one token
MAX_LENGTH = 256  # tokens a request and its reply may take (a ShapesWorld one takes about 90)
IGNORE = -100  # the label transformers' loss skips: the request and the padding are not learned


def _corpus(tokenizer: PreTrainedTokenizerFast, n: int = 2000, seed: int = 0) -> list[str]:
    """What the tokenizer's merges are learnt from: ShapesWorld conversations and every word of the course."""
    words = ["a", "an", "and", "at", "in", "the", *(w for vs in ATTRIBUTES.values() for v in vs for w in v.split())]
    texts = [" ".join(words)]
    for s in ShapesWorld(seed=seed).samples(n, "train"):
        texts += [conversation(tokenizer, s.prompt, s.description), s.prompt + " " + s.description]
    return texts


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The writer's tokenizer: Qwen2's own (a byte-level BPE, ChatML template), its merges learnt on ShapesWorld.

    transformers loads a Qwen2 model's tokenizer as a ``Qwen2Tokenizer`` whatever its
    ``tokenizer.json`` holds (it keeps the vocabulary and merges and sets Qwen's
    normaliser, pre-tokeniser and byte-level decoder), so the writer's tokenizer is one:
    any text encodes (bytes are the fallback, as in Qwen's), and its merges, trained on
    the course's texts and the instruction, make each of their words one token, so a
    request is about 80 tokens. It decodes byte for byte, so a description comes back
    exactly as it was written.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    def qwen(vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None) -> Qwen2Tokenizer:
        tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token=IM_END, pad_token=PAD, unk_token=None,
                             extra_special_tokens=[IM_START], model_max_length=MAX_LENGTH,
                             clean_up_tokenization_spaces=False)
        tok.chat_template = CHAT_TEMPLATE
        return tok

    pipeline = qwen().backend_tokenizer  # Qwen's normaliser and pre-tokeniser, to learn the merges under
    backend = Tokenizer(models.BPE())
    backend.normalizer, backend.pre_tokenizer = pipeline.normalizer, pipeline.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=MAX_VOCAB, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_corpus(qwen()), trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    return qwen(model["vocab"], [tuple(m) for m in model["merges"]])


@dataclass(frozen=True)
class WriterConfig(StageConfig):
    """Everything that determines a trained writer: the Qwen2 shape, the data and the training.

    ``prompt_order``: the target descriptions name the objects in the prompt's order, as
    the course's LLM learns them (a left-to-right copy of what the prompt states).
    """

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=32, lr=3e-3,
                                                                   warmup_steps=100))
    n_train: int = 20_000
    prompt_order: bool = True
    seed: int = 0


def default_config(profile: str | Profile | None = None) -> WriterConfig:
    """The writer each profile trains: seconds at smoke, a few minutes on a 2-core CPU at default, a GPU's at full.

    Tried at default (2-core CPU, shared): 3 or 4 layers at this width learnt more slowly
    than 2 in the same time (faithfulness 0.2-0.5 against 0.6), and 2 layers gained
    little from 2000 to 3000 steps.
    """
    p = get_profile(profile)
    return WriterConfig(
        hidden_size=p.pick(smoke=64, default=128, full=256),
        intermediate_size=p.pick(smoke=128, default=384, full=768),
        num_hidden_layers=p.pick(smoke=2, default=2, full=4),
        num_attention_heads=p.pick(smoke=2, default=4, full=8),
        num_key_value_heads=p.pick(smoke=1, default=2, full=4),
        train=TrainConfig(steps=p.pick(smoke=80, default=1500, full=10_000),
                          batch_size=p.pick(smoke=16, default=32, full=128),
                          lr=p.pick(smoke=5e-3, default=3e-3, full=1e-3),
                          warmup_steps=p.pick(smoke=10, default=100, full=500)),
        n_train=p.pick(smoke=512, default=20_000, full=200_000),
    )


def eval_n(profile: str | Profile | None = None) -> int:
    """How many held-out prompts the evaluation after training samples a description for."""
    return get_profile(profile).pick(smoke=32, default=500, full=1000)


def build(config: WriterConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """A freshly initialised ``Qwen2ForCausalLM`` of ``config``'s shape, over ``tokenizer``'s vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    qwen = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    with seeding.isolated(config.seed, "init"), quiet_libraries():
        model = Qwen2ForCausalLM(qwen)
    # generate() reads its stopping rule from here: a chat model's turn ends with <|im_end|>, as Qwen's does.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def conversation(tokenizer: PreTrainedTokenizerFast, prompt: str, description: str | None = None) -> str:
    """The chat text of ``prompt``'s request (what :meth:`DescriptionWriter.request` sends), with the reply if given."""
    messages = [{"role": "user", "content": INSTRUCTION.format(prompt=prompt)}]
    if description is None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": description})
    return tokenizer.apply_chat_template(messages, tokenize=False)


class WriterBank:
    """Training examples: ``n`` ShapesWorld prompts' conversations as token ids, labelled on the reply alone.

    Every request starts with the same instruction, so the tokens all conversations share
    (:attr:`prefix`) are kept once and the rows hold the rest: a batch runs the shared
    part once and the rest of each row after it (:func:`sequence_loss`), which gives the
    loss and gradients of the whole sequences at about half the cost.
    """

    def __init__(self, config: WriterConfig, tokenizer: PreTrainedTokenizerFast) -> None:
        samples = list(ShapesWorld(seed=config.seed).samples(config.n_train, "train"))
        replies = [describe_in_prompt_order(s.scene, s.prompt) if config.prompt_order else s.description
                   for s in samples]
        full = tokenizer([conversation(tokenizer, s.prompt, d) for s, d in zip(samples, replies)],
                         padding=True, padding_side="right", return_tensors="pt")
        requests = tokenizer([conversation(tokenizer, s.prompt) for s in samples])["input_ids"]
        ids, mask = full["input_ids"], full["attention_mask"]
        labels = torch.full_like(ids, IGNORE)
        for row, request in enumerate(requests):
            if ids[row, :len(request)].tolist() != request:  # the reply's tokens must follow the request's
                raise RuntimeError(f"the chat template does not write sample {row}'s request as a prefix of its "
                                   "conversation")
            reply = ids[row, len(request):].tolist()
            end = len(request) + reply.index(tokenizer.eos_token_id) + 1  # the turn ends with <|im_end|>
            labels[row, len(request):end] = ids[row, len(request):end]
        differs = (ids != ids[:1]).any(0)
        shared = int(differs.int().argmax()) if differs.any() else 0  # the first column where some row differs
        self.prefix = ids[0, :shared]
        self.ids, self.mask, self.labels = ids[:, shared:], mask[:, shared:], labels[:, shared:]
        if (labels[:, :shared + 1] != IGNORE).any():
            raise RuntimeError("the shared prefix of the conversations reaches into a reply")

    def batch(self, step: int, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Training batch ``step``: random examples, without the columns that are padding in every row."""
        idx = torch.randint(len(self.ids), (batch_size,), generator=seeding.torch_generator(seed, "batch", step))
        length = int(self.mask[idx].sum(1).max())
        return {"prefix": self.prefix, "input_ids": self.ids[idx, :length], "attention_mask": self.mask[idx, :length],
                "labels": self.labels[idx, :length]}


def sequence_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next-token loss of a :class:`WriterBank` batch: the shared prefix once, then each row after it.

    The prefix's keys and values (transformers' cache, gradients kept) are repeated for
    every row; the rows' positions continue after it, so each row reads as its whole
    conversation. The first token after the prefix is never a label (it is the prompt's).
    """
    rows = len(batch["input_ids"])
    cache = model(input_ids=batch["prefix"][None], use_cache=True).past_key_values
    cache.batch_repeat_interleave(rows)
    mask = torch.cat([batch["attention_mask"].new_ones(rows, len(batch["prefix"])), batch["attention_mask"]], 1)
    return model(input_ids=batch["input_ids"], attention_mask=mask, past_key_values=cache,
                 labels=batch["labels"]).loss


def train(config: WriterConfig, *, work_dir: str | Path | None = None, progress: bool = True,
          device: str | torch.device | None = None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, Any]:
    """Train a writer with ``config``; returns the model (on the CPU), its tokenizer and :func:`fit`'s result."""
    tokenizer = build_tokenizer()
    model = build(config, tokenizer)
    bank = WriterBank(config, tokenizer)
    result = fit(model, lambda s: bank.batch(s, config.train.batch_size, config.seed), sequence_loss, config.train,
                 work_dir=work_dir, desc="writer", progress=progress, device=device,
                 meta={"writer": config.identity()})
    return result.model.cpu().eval(), tokenizer, result


def evaluate(writer: DescriptionWriter, n: int = 500, split: str = "val", seed: int = 0,
             temperature: float = PretrainedConfig.temperature, batch_size: int = 100) -> dict[str, Any]:
    """The course's upsampling metrics (:func:`~llmimg.stages.llm.metrics.upsampling_scores`) of ``writer``.

    One description is sampled for each of ``n`` prompts of ``split``, as the pretrained
    pipeline samples its candidates (``temperature``, :meth:`DescriptionWriter.write`'s
    top-p); prompt k's seed is :func:`~llmimg.stages.llm.writer.prompt_seeds`' k-th. The
    rates match notebook 04's ``model_*`` ones (the course's LLM without its checker):
    ``valid_rate`` (parses), ``faithfulness`` (parses and keeps every stated attribute),
    by number of objects, and the open attributes' distance to the oracle's; each rate
    has its standard error (``<key>_se``).
    """
    prompts = [s.prompt for s in ShapesWorld(seed=seed).samples(n, split)]
    seeds = prompt_seeds(seed, n)
    t0 = time.perf_counter()
    outputs = [c[0] for start in range(0, n, batch_size)
               for c in writer.write(prompts[start:start + batch_size], seeds=seeds[start:start + batch_size],
                                     temperature=temperature, max_new_tokens=PretrainedConfig.max_new_tokens)]
    seconds = time.perf_counter() - t0
    scores = upsampling_scores(prompts, outputs, seed=seed)
    counts = {"one_object": sum(len(parse_prompt(p)) == 1 for p in prompts)}
    counts["two_objects"] = n - counts["one_object"]
    rates = {"valid_rate": scores["valid_rate"], "faithfulness": scores["faithfulness"]}
    for key, objects in (("one_object", "1"), ("two_objects", "2")):
        rates[f"faithfulness_{key}"] = scores["faithfulness_by_objects"].get(objects, float("nan"))
    sizes = {k: counts.get(k.removeprefix("faithfulness_"), n) for k in rates}
    errors = {f"{k}_se": standard_error(v, sizes[k]) if sizes[k] else float("nan") for k, v in rates.items()}
    return {**rates, **errors, "open_attribute_tv": scores["open_attribute_tv"],
            "open_attribute_tv_floor": scores["open_attribute_tv_floor"], "n": n,
            "n_one_object": counts["one_object"], "n_two_objects": counts["two_objects"],
            "temperature": temperature, "examples": [[p, o] for p, o in zip(prompts[:8], outputs[:8])],
            "seconds": seconds}


def key(config: WriterConfig) -> dict[str, Any]:
    """The cache key of a writer trained with ``config`` (see :func:`llmimg.core.store.cache_key`)."""
    return cache_key(STAGE, FORMAT, config.identity())


@dataclass(frozen=True)
class TrainedWriter:
    """A trained writer's cache folder (a ``save_pretrained`` Qwen2 with its tokenizer) and its manifest."""

    path: Path
    manifest: Manifest

    def load(self, *, device: str | torch.device | None = None,
             dtype: torch.dtype | str | None = None) -> DescriptionWriter:
        """The writer as the pretrained pipeline holds it, loaded through :func:`models.load_writer`."""
        return load_writer(str(self.path), device=device, dtype=dtype)


def check(path: str | os.PathLike) -> TrainedWriter:
    """The trained writer in ``path``, its files checked; anything missing or damaged is a :class:`CheckpointError`."""
    fix = f"retrain it with `{RETRAIN}`"
    path = require_folder(path, FILES, "a trained writer", RETRAIN)
    manifest = read_manifest(path, STAGE, fix)
    try:
        WriterConfig.from_dict(manifest.config)
    except ValueError as err:
        raise CheckpointError(f"{path.name!r} was trained with a config this version cannot read ({err}); "
                              f"{fix}") from None
    return TrainedWriter(path, manifest)


def get(profile: str | Profile | None = None, *, config: WriterConfig | None = None, force: bool = False,
        progress: bool = True) -> TrainedWriter:
    """The profile's trained writer from the model cache, trained and evaluated first if it is not there."""
    profile = get_profile(profile)
    config = config or default_config(profile)

    def build_into(out: Path, work: Path) -> None:
        model, tokenizer, result = train(config, work_dir=work, progress=progress)
        with quiet_libraries():
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            # Evaluated as it was saved, through the loader that reads hub models.
            metrics = evaluate(load_writer(str(out), device="cpu"), n=eval_n(profile))
        write_manifest(out, Manifest(STAGE, FORMAT, config.as_dict(), history=result.history,
                                     seconds=result.seconds, metrics=metrics))

    return check(cached(key(config), build_into, profile=profile, force=force))


def save_writer(folder: str | os.PathLike, profile: str | Profile | None = None, *, progress: bool = True,
                force: bool = False) -> Path:
    """Write the profile's trained writer (:func:`get`: trained first if the cache lacks it) into ``folder``.

    ``folder`` becomes a ``save_pretrained`` folder (model, tokenizer with its chat
    template, and ``llmimg.json`` with the training record and metrics) that
    ``models.load_writer(str(folder))`` loads. It must be new, empty, or hold a writer
    saved here before (whose files are replaced, the user's other files kept); any other
    non-empty folder is refused with nothing written. ``force`` retrains it. Returns the folder.
    """
    trained = get(profile, progress=progress, force=force)

    def write(out: Path) -> None:
        for name in trained.manifest.files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained.path / name, out / name)

    return save_model(folder, write, trained.manifest, "writer")


__all__ = ["FILES", "FORMAT", "IGNORE", "RETRAIN", "SPECIAL_TOKENS", "STAGE", "TrainedWriter", "WriterBank",
           "WriterConfig", "build", "build_tokenizer", "check", "conversation", "default_config", "eval_n", "evaluate",
           "get", "key", "save_writer", "sequence_loss", "train"]
