"""Do hard negatives teach binding? The GenEval-shaped world's CLIP trained with and without them, at three seeds.

Notebook 03's claim: contrastive training alone learns a bag of words, and the binding
loss (each image's description against its :func:`~llmimg.stages.clip.hard_negative`)
teaches which attribute belongs to which object. :func:`run` trains the profile's CLIP of
the GenEval-shaped world twice per training seed, with ``hard_negative_weight`` 1 (the
default) and 0, all else equal, and measures each on the same images: the binding
accuracy (``val`` and ``heldout``), top-1 retrieval in the usual gallery and in a gallery
holding every query's hard negative (:func:`~llmimg.stages.clip.retrieval`). Per seed the
two arms are compared image by image (:func:`~llmimg.core.evaluation.paired_difference`);
across seeds the record keeps the mean and the spread. The record is
``clip-binding-<profile>.json`` in the experiment records folder;
``llmimg experiment clip-binding`` is its command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmimg.core.config import Profile, describe_environment, get_profile
from llmimg.core.evaluation import paired_difference
from llmimg.research.records import read_record, record_path, write_record
from llmimg.stages import clip as clip_stage

DEFAULT = "hard negatives (default)"
ARMS: dict[str, float] = {DEFAULT: 1.0, "no hard negatives": 0.0}  # name -> its hard_negative_weight
# Per model: binding accuracy on val and heldout; top-1 retrieval (val, heldout, the hard gallery). The first
# three retrieval rates are notebook 03's headline numbers (clip.HEADLINE): their seed spread sets the tolerances.
METRICS = ("binding_val", "binding_heldout", "text_to_image_top1", "image_to_text_top1", "heldout_text_to_image_top1",
           "hard_gallery_text_to_image_top1")


def arm_config(arm: str, seed: int, profile: str | Profile | None = None) -> clip_stage.ClipConfig:
    """The CLIP config of ``arm`` at training ``seed`` (its data, initialisation and batches)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from: {', '.join(ARMS)}")
    return replace(clip_stage.default_config(profile, "geneval"), hard_negative_weight=ARMS[arm], seed=seed)


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the record of ``profile`` lives (``$LLMIMG_EXPERIMENTS_DIR`` moves it)."""
    return record_path("clip-binding", profile)


def load(profile: str | Profile | None = None) -> dict[str, Any]:
    """The committed record of ``profile``; a one-line error naming the command that writes it if there is none."""
    return read_record("clip-binding", profile)


def measure(clip: clip_stage.ShapesCLIP, n: int) -> tuple[dict[str, float], np.ndarray]:
    """The arm's :data:`METRICS` on ``n`` images per measure, and its per-image binding outcomes on ``val``."""
    outcomes = clip_stage.binding_outcomes(clip, n=n)
    val = clip_stage.retrieval(clip, n=n)
    metrics = {
        "binding_val": float(outcomes.mean()),
        "binding_heldout": clip_stage.binding_accuracy(clip, n=n, split="heldout"),
        **val,
        "heldout_text_to_image_top1": clip_stage.retrieval(clip, n=n, split="heldout")["text_to_image_top1"],
        "hard_gallery_text_to_image_top1": clip_stage.retrieval(clip, n=n, hard_negatives=True)["text_to_image_top1"],
    }
    return metrics, outcomes


def seeds_ahead(record: dict[str, Any]) -> int:
    """At how many of the record's training seeds the default arm is ahead by the paired rule."""
    return sum(row["verdict"] == f"{DEFAULT} ahead" for row in record["paired"])


def seed_numbers(profile: str | Profile | None = None) -> dict[str, list[float]]:
    """The default arm's headline numbers at each seed, named as the reference names them (``clip.<metric>``);
    empty when ``profile`` has no record. ``llmimg reproduce --write-reference`` counts their spread."""
    try:
        runs = load(profile)["runs"][DEFAULT]
    except FileNotFoundError:
        return {}
    return {f"clip.{m}": [r[m] for r in runs] for m in clip_stage.HEADLINE}


def summarise(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and metric: the mean over seeds and their standard deviation (ddof 1), the training-seed spread."""
    return {arm: {m: {"mean": float(np.mean([r[m] for r in runs])), "seed_sd": float(np.std([r[m] for r in runs],
                                                                                         ddof=1))}
                  for m in METRICS}
            for arm, runs in per_seed.items()}


def run(profile: str | Profile | None = None, seeds: Sequence[int] = (0, 1, 2), *, progress: bool = True,
        record: bool = True) -> dict[str, Any]:
    """Train (or load) both arms at every seed, measure them on the same images, and record the comparison.

    Returns ``{"profile", "machine", "n", "seeds", "runs": {arm: [{"seed", "train_seconds", metric: rate}]},
    "summary": {arm: {metric: {"mean", "seed_sd"}}}, "paired": [{"seed", ...}]}``; ``paired`` holds, per seed,
    the default minus the arm without hard negatives on the binding outcomes of the same ``n`` ``val``
    images (:class:`~llmimg.core.evaluation.PairedDifference` fields and the verdict). ``n`` is the
    profile's ``clip.eval_n``. With ``record=False`` nothing is written.
    """
    profile = get_profile(profile)
    if len(set(seeds)) < 2:
        raise ValueError(f"a spread over training seeds needs at least two different seeds, got {list(seeds)}")
    n = profile.size("clip.eval_n")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    paired = []
    for seed in seeds:
        outcomes = {}
        for arm in ARMS:
            clip = clip_stage.get(profile, config=arm_config(arm, seed, profile), progress=progress)
            metrics, outcomes[arm] = measure(clip, n)
            runs[arm].append({"seed": seed, "train_seconds": round(clip.manifest.seconds or 0.0, 1), **metrics})
        with_hn, without = ARMS
        diff = paired_difference(outcomes[with_hn], outcomes[without])
        paired.append({"seed": seed, **diff.as_dict(), "verdict": diff.verdict(with_hn, without)})
    result = {
        "profile": profile.name,
        "what": "the GenEval-shaped world's CLIP with and without the binding loss, all else equal; binding accuracy "
                "and top-1 retrieval on the same images; paired: default minus no hard negatives, per seed",
        "machine": describe_environment(profile),
        "n": n,
        "seeds": list(seeds),
        "runs": runs,
        "summary": summarise(runs),
        "paired": paired,
    }
    if record:
        write_record("clip-binding", profile, result)
    return result


__all__ = ["ARMS", "DEFAULT", "METRICS", "arm_config", "load", "measure", "results_path", "run", "seed_numbers",
           "seeds_ahead", "summarise"]
