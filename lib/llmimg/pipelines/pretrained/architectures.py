"""The pretrained world's real architectures, built from their published configurations with random weights.

No weights can be downloaded where this project is built, but a model's size, memory and
speed depend on its architecture alone. So the three models that :func:`~llmimg.pipelines.pretrained.load`
downloads on Colab are built here from their published configurations, with random
weights, by the same libraries: open_clip's ``ViT-B-32``, a ``Qwen2ForCausalLM`` with
Qwen2.5-0.5B-Instruct's dimensions, and SD-Turbo's ``StableDiffusionPipeline`` (UNet, VAE
and OpenCLIP ViT-H text encoder). :mod:`~llmimg.pipelines.pretrained.dry_run` measures them.

``shrink=True`` builds the same classes with tiny dimensions, so tests run the same code
in seconds. :func:`count_parameters` counts a model built on the ``meta`` device, which
allocates nothing: the published parameter counts can be checked without 7 GB of memory.
"""

from __future__ import annotations

from typing import Any

import torch

from llmimg.core import seeding

STAGES = ("clip", "llm", "generator")
GENERATOR_PARTS = ("text_encoder", "unet", "vae")

# open_clip ships ViT-B-32's configuration (open_clip/model_configs/ViT-B-32.json): embed_dim 512, a 12-layer
# 768-wide ViT on 224² images in 32² patches, a 12-layer 512-wide text transformer.
CLIP_MODEL = "ViT-B-32"

# Qwen2.5-0.5B-Instruct's config.json (huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json), as quoted
# by public projects that pin it (e.g. a Qwen2.5-0.5B model card page and a Qwen2-0.5B config table found with the
# project's search tools; the base and Instruct models share these dimensions): hidden 896, intermediate 4864,
# 24 layers, 14 query and 2 key-value heads, vocabulary 151936, tied embeddings, RoPE theta 1e6, RMSNorm eps 1e-6,
# 32768 positions, no sliding window.
QWEN_CONFIG: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0, "tie_word_embeddings": True, "use_sliding_window": False,
    "max_window_layers": 24,
}

# SD-Turbo is Stable Diffusion 2.1 distilled (its model card): the same UNet, VAE and text encoder. Their
# diffusers configs as published for stabilityai/stable-diffusion-2-1-base (unet/, vae/, text_encoder/
# config.json; read from a public mirror of that repository, github.com/jack-op11/stable-diffusion-2-1-base,
# since sd-turbo's own files could not be fetched here). Fields left out take diffusers' defaults, which are the
# published values (act_fn silu, norm_num_groups 32, norm_eps 1e-5, flip_sin_to_cos, layers_per_block 2 ...).
SD_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024, "use_linear_projection": True,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 768,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
# OpenCLIP ViT-H/14's text tower as transformers' CLIPTextModel: 23 of its 24 layers (SD 2 reads the penultimate).
SD_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
    "num_hidden_layers": 23, "max_position_embeddings": 77, "projection_dim": 512, "hidden_act": "gelu",
    "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
# sd-turbo samples with Euler at trailing timesteps (its scheduler_config.json), over SD's scaled-linear betas.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "timestep_spacing": "trailing", "steps_offset": 1,
}

# The parameter counts of these configurations, counted here; they agree with the published round figures:
# ViT-B/32 CLIP 151.28 M (open_clip's model profile table), Qwen2.5-0.5B 0.49 B (its model card), the SD 2 UNet
# "865 M" and the SD VAE "83.7 M" (as commonly quoted), and OpenCLIP-H's text tower, 354 M with its 24 layers,
# 340.4 M with the 23 that SD 2 keeps. The tests hold the builders to these exact numbers.
PUBLISHED_PARAMETERS: dict[str, int] = {
    "clip": 151_277_313, "llm": 494_032_768, "text_encoder": 340_387_840, "unet": 865_910_724, "vae": 83_653_863,
}

# The same classes with tiny dimensions (:func:`build` with shrink=True), for tests.
_SHRUNK_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                                "head_width": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
_SHRUNK = {
    "llm": {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "max_window_layers": 2},
    "unet": {"sample_size": 8, "block_out_channels": (8, 16), "attention_head_dim": (2, 4), "cross_attention_dim": 32,
             "layers_per_block": 1, "norm_num_groups": 4, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
    "vae": {"block_out_channels": (8, 16), "norm_num_groups": 4, "layers_per_block": 1, "sample_size": 64,
            "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2},
    "text_encoder": {"vocab_size": 1024, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                     "num_hidden_layers": 2, "projection_dim": 32},
}


def _config(base: dict[str, Any], part: str, shrink: bool) -> dict[str, Any]:
    return {**base, **_SHRUNK[part]} if shrink else dict(base)


def clip_config(shrink: bool = False) -> dict[str, Any]:
    """open_clip's ViT-B-32 model configuration (``embed_dim``, ``vision_cfg``, ``text_cfg``), or a tiny one."""
    import open_clip

    return dict(_SHRUNK_CLIP) if shrink else open_clip.get_model_config(CLIP_MODEL)


def build_clip(shrink: bool = False, seed: int = 0) -> torch.nn.Module:
    """An open_clip ``CLIP`` with ViT-B-32's architecture (as ``open_clip.create_model("ViT-B-32")`` builds it)."""
    import open_clip

    with seeding.isolated(seed, "init", 0):
        return open_clip.CLIP(**clip_config(shrink))


def clip_image_size(shrink: bool = False) -> int:
    """The side of the images the CLIP reads (224 for ViT-B-32)."""
    size = clip_config(shrink)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def build_llm(shrink: bool = False, seed: int = 0, *, eos_token_id: int | None = None,
              pad_token_id: int | None = None) -> torch.nn.Module:
    """A ``Qwen2ForCausalLM`` with Qwen2.5-0.5B-Instruct's dimensions (:data:`QWEN_CONFIG`), or tiny ones."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**_config(QWEN_CONFIG, "llm", shrink), bos_token_id=None, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id)
    with seeding.isolated(seed, "init", 1):
        return Qwen2ForCausalLM(config)


def _sd_tokenizer() -> Any:
    """A ``CLIPTokenizer`` over the 512 byte-level symbols (as the tiny world's): only the token count matters here.

    Stable Diffusion pads every prompt to 77 tokens, so the text encoder's work is the
    same whatever the vocabulary; the real one cannot be fetched here.
    """
    from transformers import CLIPTokenizer

    from llmimg.pipelines.pretrained.tiny import _byte_level_vocab

    vocab = _byte_level_vocab()
    vocab = {**vocab, **{s + "</w>": i + len(vocab) for s, i in vocab.items()}}
    vocab = {**vocab, "<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def generator_parts(shrink: bool = False, seed: int = 0) -> dict[str, torch.nn.Module]:
    """SD-Turbo's text encoder, UNet and VAE with random weights (:data:`SD_TEXT_CONFIG` ...), or tiny ones."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = _config(SD_TEXT_CONFIG, "text_encoder", shrink)
    unet = _config(SD_UNET_CONFIG, "unet", shrink)
    if shrink:
        unet["cross_attention_dim"] = text["hidden_size"]
    with seeding.isolated(seed, "init", 2):
        return {"text_encoder": CLIPTextModel(CLIPTextConfig(**text)),
                "unet": UNet2DConditionModel(**unet),
                "vae": AutoencoderKL(**_config(SD_VAE_CONFIG, "vae", shrink))}


def build_generator(shrink: bool = False, seed: int = 0) -> Any:
    """A diffusers ``StableDiffusionPipeline`` with SD-Turbo's architecture and scheduler, random weights."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    parts = generator_parts(shrink, seed)
    pipe = StableDiffusionPipeline(**parts, tokenizer=_sd_tokenizer(),
                                   scheduler=EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameters(model: torch.nn.Module) -> int:
    """The exact number of parameters of ``model`` (tied weights counted once, as ``parameters()`` yields them)."""
    return sum(p.numel() for p in model.parameters())


def count_parameters(shrink: bool = False) -> dict[str, int]:
    """The parameters of each model, built on the ``meta`` device (nothing allocated, under a second).

    Keys: ``clip``, ``llm``, and the generator's ``text_encoder``, ``unet``, ``vae``.
    """
    with torch.device("meta"):
        counts = {"clip": parameters(build_clip(shrink)), "llm": parameters(build_llm(shrink))}
        counts.update({name: parameters(part) for name, part in generator_parts(shrink).items()})
    return counts


__all__ = ["CLIP_MODEL", "GENERATOR_PARTS", "PUBLISHED_PARAMETERS", "QWEN_CONFIG", "SD_SCHEDULER_CONFIG",
           "SD_TEXT_CONFIG", "SD_UNET_CONFIG", "SD_VAE_CONFIG", "STAGES", "build_clip", "build_generator",
           "build_llm", "clip_config", "clip_image_size", "count_parameters", "generator_parts", "parameters"]
