"""The course's trained CLIP text tower as the transformers ``CLIPTextModel`` and tokenizer Stable Diffusion reads.

Stable Diffusion 2 conditions its UNet on a frozen OpenCLIP text tower, converted to
transformers' ``CLIPTextModel``; :func:`clip_text_model` does the same for the course's
:class:`~llmimg.stages.clip.ShapesCLIP` (an ``open_clip.CLIP``), weight for weight. The
two towers compute the same thing: token plus position embeddings, pre-norm residual
blocks under a causal mask (exact GELU unless the config asks for QuickGELU), then the
final layer norm; ``last_hidden_state`` is ``ShapesCLIP.token_states``. open_clip keeps
the query, key and value projections in one ``in_proj`` matrix, transformers in three.

The course tokenizer is already a transformers fast tokenizer (``<bos> words <eos>``,
padded with ``<pad>``); :func:`clip_tokenizer` only sets its ``model_max_length`` to
the tower's context length, which ``StableDiffusionPipeline.encode_prompt`` pads to.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from llmimg.core.text import BOS_ID, EOS_ID, PAD_ID
from llmimg.stages.clip import ShapesCLIP, model_config


def text_config(clip: ShapesCLIP) -> Any:
    """The ``CLIPTextConfig`` of ``clip``'s text tower, read from its open_clip model config."""
    from transformers import CLIPTextConfig

    cfg = model_config(clip.config.model_name)
    text = cfg["text_cfg"]
    unsupported = {k: text[k] for k in ("no_causal_mask", "ls_init_value", "embed_cls", "hf_model_name")
                   if text.get(k)}
    if unsupported or text.get("pool_type", "eos") != "eos":
        raise ValueError(f"the CLIP text tower {clip.config.model_name!r} has options CLIPTextModel does not "
                         f"compute: {unsupported or {'pool_type': text.get('pool_type')}}")
    width = int(text["width"])
    return CLIPTextConfig(
        vocab_size=int(text["vocab_size"]), hidden_size=width,
        intermediate_size=int(width * text.get("mlp_ratio", 4.0)), num_hidden_layers=int(text["layers"]),
        num_attention_heads=int(text["heads"]), max_position_embeddings=int(text["context_length"]),
        hidden_act="quick_gelu" if cfg.get("quick_gelu") else "gelu", layer_norm_eps=1e-5,
        projection_dim=int(cfg["embed_dim"]), pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=int(text.get("eos_id", EOS_ID)))


def convert_state_dict(clip: ShapesCLIP) -> dict[str, torch.Tensor]:
    """``clip``'s text-tower weights under ``CLIPTextModel``'s names (vision tower left out)."""
    sd = {k: v.detach().float().cpu() for k, v in clip.model.state_dict().items()}
    out = {"embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "embeddings.position_embedding.weight": sd["positional_embedding"],
           "final_layer_norm.weight": sd["ln_final.weight"],
           "final_layer_norm.bias": sd["ln_final.bias"]}
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for name in ("weight", "bias"):
            q, k, v = sd[f"{src}attn.in_proj_{name}"].chunk(3, dim=0)
            out.update({f"{dst}self_attn.q_proj.{name}": q, f"{dst}self_attn.k_proj.{name}": k,
                        f"{dst}self_attn.v_proj.{name}": v,
                        f"{dst}self_attn.out_proj.{name}": sd[f"{src}attn.out_proj.{name}"],
                        f"{dst}layer_norm1.{name}": sd[f"{src}ln_1.{name}"],
                        f"{dst}layer_norm2.{name}": sd[f"{src}ln_2.{name}"],
                        f"{dst}mlp.fc1.{name}": sd[f"{src}mlp.c_fc.{name}"],
                        f"{dst}mlp.fc2.{name}": sd[f"{src}mlp.c_proj.{name}"]})
    return {k: v.contiguous().clone() for k, v in out.items()}


def clip_text_model(clip: ShapesCLIP) -> Any:
    """``clip``'s text tower as a frozen transformers ``CLIPTextModel`` computing the same token states.

    Every weight of the tower is copied (a key left over or missing on either side raises
    ``ValueError``); the result is in eval mode with gradients off, as Stable Diffusion
    keeps its text encoder.
    """
    from transformers import CLIPTextModel

    with torch.device("cpu"):
        model = CLIPTextModel(text_config(clip))
    missing, unexpected = model.load_state_dict(convert_state_dict(clip), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # a buffer transformers makes itself
    if missing or unexpected:
        raise ValueError(f"the CLIP text tower does not map onto CLIPTextModel: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.eval().requires_grad_(False)


def clip_tokenizer(clip: ShapesCLIP) -> Any:
    """A copy of ``clip``'s tokenizer that pads and truncates to the text tower's context length."""
    tokenizer = copy.deepcopy(clip.tokenizer)
    tokenizer.model_max_length = int(model_config(clip.config.model_name)["text_cfg"]["context_length"])
    return tokenizer


__all__ = ["clip_text_model", "clip_tokenizer", "convert_state_dict", "text_config"]
