"""Tiny random stand-ins for the pretrained models: the pretrained world without a download.

No machine that builds or tests this project can fetch weights, so the pretrained code is
run on tiny random models of the same classes, built here and saved with
``save_pretrained`` (open_clip's ``local-dir`` layout for CLIP) into a local folder, then
loaded back through the very loaders that read the hub models, as diffusers' and
transformers' own tests do. Everything builds in a second or two on a CPU and is the same
for the same seed. The models are untrained: their descriptions are gibberish and their
images noise; what runs is the code path.

Tokenizers are built locally too: the LLM's is a byte-level BPE with no merges (any text
encodes, one token per byte) and a ChatML chat template like Qwen's; Stable Diffusion's
is a ``CLIPTokenizer`` over the 512 byte-level symbols; CLIP's is open_clip's own, which
ships inside the package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from llmimg.core import seeding
from llmimg.core.folders import json_says, save_into
from llmimg.core.store import quiet_libraries, save_tensors
from llmimg.pipelines.pretrained.models import PretrainedConfig
from llmimg.pipelines.pretrained.pipeline import PretrainedPipeline, load

WRITER_KINDS = ("chat", "plain", "seq2seq")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2.5's template without its tool-calling branches: each message as <|im_start|>role\n...<|im_end|>.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CLIP_CONFIG = {  # open_clip's ViT-B-32 layout, shrunk; context length and vocabulary fit its bundled tokenizer
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _byte_level_vocab(extra: tuple[str, ...] = ()) -> dict[str, int]:
    """The 256 byte-level symbols (then ``extra``) numbered from 0."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())  # sorted: the alphabet is a set, and the ids must not depend on its order
    return {s: i for i, s in enumerate([*symbols, *extra])}


def _llm_tokenizer(chat: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=_byte_level_vocab(SPECIAL_TOKENS), merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    eos = "<|im_end|>" if chat else "<|endoftext|>"  # a chat model ends its turn with <|im_end|>, as Qwen's does
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>")
    if chat:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_writer(folder: str | os.PathLike, kind: str = "chat", seed: int = 0) -> Path:
    """Save a tiny random LLM of ``kind`` with its tokenizer into ``folder``; returns the folder.

    ``folder`` must be new, empty, or hold such a model already (its files are replaced,
    the user's other files kept).

    ``"chat"``: a Qwen2 causal LM with a chat template (as Qwen2.5-Instruct); ``"plain"``:
    a GPT-2 without one (as gpt2); ``"seq2seq"``: a T5 (as t5-base).
    """
    from transformers import (GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    if kind not in WRITER_KINDS:
        raise ValueError(f"unknown writer kind {kind!r}; choose one of {', '.join(WRITER_KINDS)}")
    tokenizer = _llm_tokenizer(chat=kind == "chat")
    vocab, eos, pad = len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id
    with seeding.isolated(seed, "init"):
        if kind == "chat":
            model = Qwen2ForCausalLM(Qwen2Config(
                vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=True,
                bos_token_id=None, eos_token_id=eos, pad_token_id=pad))
        elif kind == "plain":
            model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=1024,
                                               bos_token_id=eos, eos_token_id=eos))
        else:
            model = T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_layers=2,
                                                        num_heads=2, eos_token_id=eos, pad_token_id=pad,
                                                        decoder_start_token_id=pad))
    return _save(folder, lambda out: (model.save_pretrained(out), tokenizer.save_pretrained(out)), "config.json",
                 "language model", "model_type", model.config.model_type)


def _tiny_clip(folder: Path, seed: int) -> Path:
    import open_clip

    with seeding.isolated(seed, "init"):
        model = open_clip.CLIP(**CLIP_CONFIG)

    def write(out: Path) -> None:
        save_tensors(model.state_dict(), out / "open_clip_model.safetensors")
        (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": CLIP_CONFIG, "preprocess_cfg": {}},
                                                              indent=1))

    return _save(folder, write, "open_clip_config.json", "CLIP", "model_cfg", CLIP_CONFIG)


def _tiny_generator(folder: Path, seed: int) -> Path:
    """A tiny Stable Diffusion (diffusers' test components, shrunk): 16×16 latents, 32×32 images."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = _byte_level_vocab()
    # With no merges every word is its bytes, the last one marked as the word's end: both forms of each byte.
    vocab = {**vocab, **{s + "</w>": i + len(vocab) for s, i in vocab.items()}}
    vocab = {**vocab, "<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    with seeding.isolated(seed, "init"):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=77, projection_dim=32, bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=4)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    # Trailing timesteps, as few-step models such as sd-turbo sample them.
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return _save(folder, pipe.save_pretrained, "model_index.json", "image generator", "_class_name",
                 type(pipe).__name__)


def _save(folder: str | os.PathLike, write: Callable[[Path], object], marker: str, what: str, key: str,
          value: Any) -> Path:
    """Write a model folder as the stages' saves do (:func:`~llmimg.core.folders.save_into`).

    A new or empty ``folder`` is written directly; one holding such a model before (its
    ``marker`` file, a JSON object whose ``key`` is ``value``) gets the new files in place
    of the old ones, the user's other files kept; any other non-empty folder is refused,
    with nothing written.
    """
    return save_into(folder, write, markers=(marker,), what=what, holds=lambda f: json_says(f / marker, key, value))


def tiny_components(folder: str | os.PathLike, seed: int = 0) -> PretrainedConfig:
    """Build the three tiny random models, save them under ``folder`` and return the config that names them.

    ``folder`` gets ``clip/``, ``llm/`` (the ``"chat"`` kind of :func:`tiny_writer`) and
    ``generator/``; models saved there before are replaced, and nothing else of the
    folder is touched. The config draws in 2 steps.
    """
    folder = Path(folder)
    with quiet_libraries():
        return PretrainedConfig(
            clip_model=str(_tiny_clip(folder / "clip", seed)), clip_pretrained=None,
            llm=str(tiny_writer(folder / "llm", "chat", seed)),
            generator=str(_tiny_generator(folder / "generator", seed)),
            num_inference_steps=2, guidance_scale=0.0, max_new_tokens=24)


def tiny_pipeline(folder: str | os.PathLike, seed: int = 0, *,
                  device: str | torch.device | None = "cpu") -> PretrainedPipeline:
    """The pretrained pipeline on tiny random models saved under ``folder`` (see :func:`tiny_components`).

    It builds and runs offline in seconds on a CPU; its descriptions are gibberish and its
    images noise. ``device=None`` picks the best available (see :func:`llmimg.core.config.get_device`).
    """
    config = tiny_components(folder, seed)
    with quiet_libraries():
        return load(config, device=device)


__all__ = ["CHAT_TEMPLATE", "WRITER_KINDS", "tiny_components", "tiny_pipeline", "tiny_writer"]
