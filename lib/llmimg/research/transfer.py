"""Claim 3 (notebook 06): do a trained language model's states train a generator faster than a text encoder
learned from scratch?

One generator conditioned on the trained LLM's hidden states (frozen), one whose text
encoder of the same shape is learned from scratch with it, scored along training
(:func:`transfer_curve`).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from llmimg.core import seeding
from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import shapes_eval, standard_error
from llmimg.core.store import Manifest, cache_key, cached, read_manifest, write_manifest
from llmimg.core.training import fit
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


class _TextConditioned(nn.Module):
    """The UNet with its text encoder: one module for ``fit`` (a frozen encoder has no trainable parameters)."""

    def __init__(self, unet: nn.Module, text: llm_stage.GPT2TextEncoder, frozen: bool) -> None:
        super().__init__()
        self.unet, self.text, self.frozen = unet, text, frozen
        text.requires_grad_(not frozen)


TRANSFER_KINDS = ("pretrained LLM", "from scratch")


def transfer_encoder(kind: str, llm: llm_stage.ShapesLLM) -> llm_stage.GPT2TextEncoder:
    """The trained LLM's GPT-2 body (a copy), or a fresh GPT-2 body of the same shape without dropout."""
    from transformers import GPT2Config, GPT2Model

    if kind not in TRANSFER_KINDS:
        raise ValueError(f"unknown text encoder {kind!r}; choose one of {', '.join(TRANSFER_KINDS)}")
    body = llm.lm.gpt2.transformer
    if kind == "pretrained LLM":
        return llm_stage.GPT2TextEncoder(copy.deepcopy(body).eval(), llm.tokenizer, path=llm.path)
    cfg = GPT2Config(**{**body.config.to_dict(), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    return llm_stage.GPT2TextEncoder(GPT2Model(cfg), llm.tokenizer)


def transfer_config(profile: str | Profile | None = None) -> tuple[gen_stage.GeneratorConfig, tuple[int, ...]]:
    """The generator recipe of the transfer runs and the training steps at which they are scored."""
    profile = get_profile(profile)
    config = gen_stage.default_config(profile)
    steps = profile.size("transfer.steps")
    return (replace(config, train=replace(config.train, steps=steps, checkpoint_every=max(steps, 1))),
            tuple(sorted({max(1, steps * k // 4) for k in range(1, 5)})))


def train_transfer(kind: str, llm: llm_stage.ShapesLLM, config: gen_stage.GeneratorConfig,
                   eval_steps: Sequence[int], *, n_eval: int = 100, num_inference_steps: int = 10,
                   progress: bool = True) -> tuple[list[dict[str, float]], gen_stage.ShapesGenerator]:
    """Train a generator on ``kind`` text states and score it at ``eval_steps``: the curve and the final generator.

    Both kinds start from the same UNet weights and see the same batches; only the text
    encoder differs. Scores are ShapesEval of ``n_eval`` one-object validation
    descriptions (DPM-Solver++, ``num_inference_steps``, the config's guidance).
    """
    with seeding.isolated(config.train.seed, "init", 1):
        text = transfer_encoder(kind, llm)
    with seeding.isolated(config.train.seed, "init", 0):  # the same UNet for both kinds
        model = _TextConditioned(gen_stage.build_unet(config, text.width), text, frozen=kind == "pretrained LLM")
    scheduler = gen_stage.build_scheduler(config)
    base_loss = gen_stage.make_loss_fn(config, scheduler)

    def loss(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        if m.frozen:
            m.text.eval()  # fit() puts every submodule in training mode; the frozen body stays as trained
            with torch.no_grad():
                states, mask = m.text.states(b["texts"])
        else:
            states, mask = m.text.states(b["texts"])
        return base_loss(m.unet, {**b, "states": states, "mask": mask})

    descriptions = [s.description for s in ShapesWorld(seed=config.data_seed, max_objects=1).samples(n_eval, "val")]

    def evaluate(step: int, m: nn.Module) -> dict[str, float] | None:
        if step not in eval_steps:
            return None
        snapshot = copy.deepcopy(m).eval()  # ShapesGenerator freezes what it is given
        gen = gen_stage.ShapesGenerator(snapshot.unet, scheduler, snapshot.text, config)
        judged = shapes_eval(gen.generate(descriptions, num_inference_steps=num_inference_steps, check=False),
                             descriptions)
        attrs = judged.per_attribute
        return {"all_correct": judged.all_correct, "mean_attribute": float(np.mean(list(attrs.values()))), **attrs}

    batches = gen_stage.make_batch_fn(config, None, gen_stage.make_bank(config))
    result = fit(model, batches, loss, config.train, desc=f"generator on {kind}", progress=progress,
                 on_step=evaluate)
    final = gen_stage.ShapesGenerator(result.model.unet, scheduler, result.model.text, config)
    return result.evaluations, final


STAGE = "transfer"
FORMAT = 2  # bump when a change to this module's code changes what a transfer run is


def transfer_curve(kind: str, profile: str | Profile | None = None, *, progress: bool = True,
                   n_eval: int | None = None) -> list[dict[str, float]]:
    """The ShapesEval-against-training-steps curve of ``kind``, trained once and kept in the profile's cache.

    Each point also holds ``n`` (``n_eval`` one-object descriptions, default the profile's
    ``transfer.eval_n``) and ``all_correct_se``.
    """
    profile = get_profile(profile)
    n_eval = n_eval or profile.size("transfer.eval_n")
    llm = llm_stage.get(profile, progress=progress)
    config, eval_steps = transfer_config(profile)
    run = {"kind": kind, "generator": config.as_dict(), "eval_steps": list(eval_steps), "n_eval": n_eval}
    identity = {**run, "generator": config.identity()}

    def build(out: Path, work: Path) -> None:
        curve, gen = train_transfer(kind, llm, config, eval_steps, n_eval=n_eval, progress=progress)
        gen.unet.save_pretrained(out / "unet", safe_serialization=True)
        gen.text_encoder.gpt2.save_pretrained(out / "text_encoder")
        write_manifest(out, Manifest(STAGE, FORMAT, run, upstream={"llm": llm.path.name}, curve=curve))

    folder = cached(cache_key(STAGE, FORMAT, identity, {"llm": llm.path.name}), build, profile=profile)
    curve = read_manifest(folder, STAGE, "delete that folder and run again: the run is trained anew").curve
    return [{**p, "n": n_eval, "all_correct_se": standard_error(p["all_correct"], n_eval)} for p in curve]


__all__ = ["FORMAT", "STAGE", "TRANSFER_KINDS", "train_transfer", "transfer_config", "transfer_curve",
           "transfer_encoder"]
