"""Claim 3 (notebook 06): do a trained language model's states train a generator faster than a text encoder
learned from scratch?

Three generators with the same recipe, scored along training (:func:`transfer_curve`):
one conditioned on the trained LLM's hidden states (frozen), one on the pipeline's CLIP
text states (frozen; what the pipeline's own generator reads), and one whose GPT-2 of the
LLM's shape is learned from scratch with it. Every point is drawn from the same
descriptions and noise, so two encoders compare image by image (the course's paired rule).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llmimg.core import seeding
from llmimg.core.config import Profile, describe_environment, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import paired_difference, shapes_eval, standard_error
from llmimg.core.store import Manifest, cache_key, cached, read_manifest, write_manifest
from llmimg.core.training import fit
from llmimg.research.records import read_record, record_path, write_record
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

TRANSFER_KINDS = ("pretrained LLM", "CLIP text", "from scratch")
TRAINED_KIND = "from scratch"  # the one kind whose text encoder learns with the UNet; the others are frozen
ATTRIBUTES_STATED = 4  # a one-object description states shape, colour, size and position
COMPARED = (("pretrained LLM", "from scratch"), ("pretrained LLM", "CLIP text"))  # the record's paired comparisons


def transfer_encoder(kind: str, llm: llm_stage.ShapesLLM) -> Any:
    """The text encoder of ``kind``: the trained LLM's GPT-2 body (a copy), the pipeline's CLIP (its text tower's
    token states, what the pipeline's own generator reads), or a fresh GPT-2 body of the LLM's shape without dropout."""
    from transformers import GPT2Config, GPT2Model

    if kind not in TRANSFER_KINDS:
        raise ValueError(f"unknown text encoder {kind!r}; choose one of {', '.join(TRANSFER_KINDS)}")
    if kind == "CLIP text":
        return llm.clip
    body = llm.lm.gpt2.transformer
    if kind == "pretrained LLM":
        return llm_stage.GPT2TextEncoder(copy.deepcopy(body).eval(), llm.tokenizer, path=llm.path)
    cfg = GPT2Config(**{**body.config.to_dict(), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    return llm_stage.GPT2TextEncoder(GPT2Model(cfg), llm.tokenizer)


def transfer_config(profile: str | Profile | None = None,
                    seed: int | None = None) -> tuple[gen_stage.GeneratorConfig, tuple[int, ...]]:
    """The generator recipe of the transfer runs (training ``seed``, default the recipe's) and the training steps
    at which they are scored."""
    profile = get_profile(profile)
    config = gen_stage.default_config(profile)
    steps = profile.size("transfer.steps")
    train = replace(config.train, steps=steps, checkpoint_every=max(steps, 1),
                    seed=config.train.seed if seed is None else seed)
    return replace(config, train=train), tuple(sorted({max(1, steps * k // 4) for k in range(1, 5)}))


def _judged_point(judged: Any) -> dict[str, Any]:
    """One point of a curve: the rates, and per image what pairs two encoders drawn on the same descriptions and noise.

    ``per_image`` holds each image's all-correct (0/1), ``attributes_right`` how many of its
    description's attributes are right (a digit; one-object descriptions state four), and
    ``found_object`` the share of images in which the judge found any object at all.
    """
    attrs = judged.per_attribute
    right = [sum(r for r, _ in record.attribute_counts.values()) for record in judged.records]
    return {"all_correct": judged.all_correct, "mean_attribute": float(np.mean(list(attrs.values()))), **attrs,
            "found_object": float(np.mean([record.n_detected > 0 for record in judged.records])),
            "per_image": "".join("01"[record.all_correct] for record in judged.records),
            "attributes_right": "".join(str(r) for r in right)}


def train_transfer(kind: str, llm: llm_stage.ShapesLLM, config: gen_stage.GeneratorConfig,
                   eval_steps: Sequence[int], *, n_eval: int = 100, num_inference_steps: int = 10,
                   progress: bool = True) -> tuple[list[dict[str, Any]], gen_stage.ShapesGenerator]:
    """Train a generator on ``kind`` text states and score it at ``eval_steps``: the curve and the final generator.

    Every kind starts from UNet weights drawn with the same seed and sees the same batches;
    only the text encoder differs (the CLIP's states are narrower than GPT-2's, so its
    UNet's cross-attention inputs differ in shape). Scores are ShapesEval of ``n_eval``
    one-object validation descriptions (DPM-Solver++, ``num_inference_steps``, the config's
    guidance), drawn from the same noise at every point and for every kind, so that two
    kinds pair image by image (:func:`_judged_point`).
    """
    with seeding.isolated(config.train.seed, "init", 1):
        text = transfer_encoder(kind, llm)
    trained = kind == TRAINED_KIND
    with seeding.isolated(config.train.seed, "init", 0):  # the same UNet draw for every kind
        unet = gen_stage.build_unet(config, text.width)
    # fit() trains every parameter of its module: a frozen encoder stays outside it, in eval mode.
    model = nn.ModuleDict({"unet": unet, "text": text} if trained else {"unet": unet})
    scheduler = gen_stage.build_scheduler(config)
    base_loss = gen_stage.make_loss_fn(config, scheduler)

    def loss(m: nn.ModuleDict, b: dict[str, Any]) -> torch.Tensor:
        states, mask = m["text"].states(b["texts"]) if trained else text.token_states(b["texts"], check=False)
        return base_loss(m["unet"], {**b, "states": states, "mask": mask})

    descriptions = [s.description for s in ShapesWorld(seed=config.data_seed, max_objects=1).samples(n_eval, "val")]

    def generator_of(m: nn.ModuleDict) -> gen_stage.ShapesGenerator:
        return gen_stage.ShapesGenerator(m["unet"], scheduler, m["text"] if trained else text, config)

    def evaluate(step: int, m: nn.ModuleDict) -> dict[str, Any] | None:
        if step not in eval_steps:
            return None
        gen = generator_of(copy.deepcopy(m).eval())  # ShapesGenerator freezes what it is given
        images = gen.generate(descriptions, num_inference_steps=num_inference_steps, check=False)
        return _judged_point(shapes_eval(images, descriptions))

    batches = gen_stage.make_batch_fn(config, None, gen_stage.make_bank(config))
    result = fit(model, batches, loss, config.train, desc=f"generator on {kind}", progress=progress,
                 on_step=evaluate)
    return result.evaluations, generator_of(result.model)


STAGE = "transfer"
FORMAT = 3  # bump when a change to this module's code changes what a transfer run is


def transfer_curve(kind: str, profile: str | Profile | None = None, *, seed: int | None = None,
                   progress: bool = True, n_eval: int | None = None) -> list[dict[str, Any]]:
    """The ShapesEval-against-training-steps curve of ``kind`` at training ``seed``, trained once and kept in the
    profile's cache.

    Each point also holds ``n`` (``n_eval`` one-object descriptions, default the profile's
    ``transfer.eval_n``), ``all_correct_se`` and the training ``seed``.
    """
    profile = get_profile(profile)
    n_eval = n_eval or profile.size("transfer.eval_n")
    llm = llm_stage.get(profile, progress=progress)
    config, eval_steps = transfer_config(profile, seed)
    run = {"kind": kind, "generator": config.as_dict(), "eval_steps": list(eval_steps), "n_eval": n_eval}
    identity = {**run, "generator": config.identity()}

    def build(out: Path, work: Path) -> None:
        curve, gen = train_transfer(kind, llm, config, eval_steps, n_eval=n_eval, progress=progress)
        gen.unet.save_pretrained(out / "unet", safe_serialization=True)
        if kind == TRAINED_KIND:  # the frozen encoders are the LLM's and the CLIP's, cached already
            gen.text_encoder.gpt2.save_pretrained(out / "text_encoder")
        write_manifest(out, Manifest(STAGE, FORMAT, run, upstream={"llm": llm.path.name}, curve=curve))

    folder = cached(cache_key(STAGE, FORMAT, identity, {"llm": llm.path.name}), build, profile=profile)
    curve = read_manifest(folder, STAGE, "delete that folder and run again: the run is trained anew").curve
    return [{**p, "n": n_eval, "all_correct_se": standard_error(p["all_correct"], n_eval), "seed": config.train.seed}
            for p in curve]


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the record of ``profile`` lives (``$LLMIMG_EXPERIMENTS_DIR`` moves it)."""
    return record_path("transfer", profile)


def load(profile: str | Profile | None = None) -> dict[str, Any]:
    """The committed record of ``profile``; a one-line error naming the command that writes it if there is none."""
    return read_record("transfer", profile)


def per_image(point: dict[str, Any], metric: str) -> np.ndarray:
    """A curve point's per-image scores: ``all_correct`` (0/1) or ``mean_attribute`` (the share of the four
    attributes right), in the order of the descriptions every point draws."""
    if metric == "all_correct":
        return np.array([c == "1" for c in point["per_image"]], dtype=float)
    if metric == "mean_attribute":
        return np.array([int(c) for c in point["attributes_right"]], dtype=float) / ATTRIBUTES_STATED
    raise ValueError(f"unknown metric {metric!r}; choose all_correct or mean_attribute")


def compare_points(a: dict[str, Any], b: dict[str, Any], metric: str = "mean_attribute") -> Any:
    """Two curve points (same descriptions, same noise) compared image by image: a paired difference."""
    return paired_difference(per_image(a, metric), per_image(b, metric))


def run(profile: str | Profile | None = None, seeds: Sequence[int] = (0, 1, 2), *, progress: bool = True,
        record: bool = True) -> dict[str, Any]:
    """Train (or load) every kind at every training seed and record the curves and their paired comparisons.

    Returns ``{"profile", "what", "machine", "n", "seeds", "steps", "runs": {kind: [{"seed", "curve"}]},
    "summary": {kind: {metric: {"mean", "seed_sd"}}}, "paired": [...]}``. ``summary`` is taken at the
    last point of each curve; ``paired`` holds, per seed, point and pair of :data:`COMPARED`, the
    paired difference of ``mean_attribute`` (:func:`compare_points`) and its verdict. With
    ``record=False`` nothing is written.
    """
    profile = get_profile(profile)
    if len(set(seeds)) < 2:
        raise ValueError(f"a spread over training seeds needs at least two different seeds, got {list(seeds)}")
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in TRANSFER_KINDS}
    for seed in seeds:
        for kind in TRANSFER_KINDS:
            runs[kind].append({"seed": seed, "curve": transfer_curve(kind, profile, seed=seed, progress=progress)})
    paired = []
    for i, seed in enumerate(seeds):
        for a, b in COMPARED:
            for pa, pb in zip(runs[a][i]["curve"], runs[b][i]["curve"]):
                d = compare_points(pa, pb)
                paired.append({"seed": seed, "step": pa["step"], "a": a, "b": b, **d.as_dict(),
                               "verdict": d.verdict(a, b)})
    metrics = ("all_correct", "mean_attribute", "found_object")
    summary = {kind: {m: {"mean": float(np.mean([r["curve"][-1][m] for r in rs])),
                          "seed_sd": float(np.std([r["curve"][-1][m] for r in rs], ddof=1))} for m in metrics}
               for kind, rs in runs.items()}
    first = runs[TRANSFER_KINDS[0]][0]["curve"]
    result = {"profile": profile.name,
              "what": "generators of one recipe conditioned on three text encoders (the trained LLM's GPT-2, frozen; "
                      "the pipeline's CLIP text states, frozen; a GPT-2 of the same shape learned from scratch), "
                      "scored along training on the same one-object descriptions and noise; paired per image",
              "machine": describe_environment(profile), "n": first[0]["n"], "seeds": list(seeds),
              "steps": [p["step"] for p in first], "runs": runs, "summary": summary, "paired": paired}
    if record:
        write_record("transfer", profile, result)
    return result


__all__ = ["ATTRIBUTES_STATED", "COMPARED", "FORMAT", "STAGE", "TRAINED_KIND", "TRANSFER_KINDS", "compare_points",
           "load", "per_image", "results_path", "run", "train_transfer", "transfer_config", "transfer_curve",
           "transfer_encoder"]
