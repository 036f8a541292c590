"""The spread of the stages' headline numbers over training seeds.

A reference number (:mod:`llmimg.course.reference`) needs a tolerance, and the evaluation's
sampling error alone understates how far a rerun may land: a model trained again from
another seed is another model. :func:`run` trains each stage at ``seeds`` (the stage's
own seed changes; the stages it builds on stay the profile's), evaluates it as notebooks
03-05 do (same functions, same ``n``: the sizes table's ``<stage>.eval_n``) and records
the numbers in ``seed-spread-<profile>.json`` in the experiment records folder
(:func:`llmimg.core.config.experiments_dir`), which ``llmimg reproduce --write-reference``
reads. ``llmimg experiment seed-spread`` is the
command line for it. Seed 0 is the profile's own model, so it costs no training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, describe_environment, experiments_dir, get_profile
from llmimg.core.store import atomic_write
from llmimg.stages import clip, generator, llm

__all__ = ["load", "results_path", "run"]
STAGES = {"clip": clip, "llm": llm, "generator": generator}


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the spread of ``profile`` is recorded."""
    return experiments_dir() / f"seed-spread-{get_profile(profile).name}.json"


def load(profile: str | Profile | None = None) -> dict[str, Any] | None:
    """The recorded spread of ``profile`` (``{"seeds", "numbers": {name: [one per seed]}, ...}``), or None."""
    path = results_path(profile)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _stage_numbers(stage: str, seed: int, profile: Profile, progress: bool) -> dict[str, float]:
    n = profile.size(f"{stage}.eval_n")
    if stage == "clip":
        # Notebook 03's CLIP: the GenEval-shaped world's.
        model = clip.get(profile, progress=progress, config=replace(clip.default_config(profile, "geneval"), seed=seed))
        val, heldout = clip.retrieval(model, n=n), clip.retrieval(model, n=n, split="heldout")
        metrics = {**val, "heldout_text_to_image_top1": heldout["text_to_image_top1"]}
    elif stage == "llm":
        model = llm.get(profile, progress=progress, config=replace(llm.default_config(profile), seed=seed))
        metrics = llm.evaluate(model, n=n)
    else:
        config = generator.default_config(profile)
        config = replace(config, train=replace(config.train, seed=seed))
        model = generator.get(profile, progress=progress, config=config)
        metrics = generator.evaluate(model, n=n)
    return {f"{stage}.{k}": float(metrics[k]) for k in STAGES[stage].HEADLINE}


def run(profile: str | Profile | None = None, seeds: Sequence[int] = (0, 1, 2), *,
        stages: Sequence[str] = ("clip", "llm", "generator"), progress: bool = True,
        record: bool = True) -> dict[str, Any]:
    """Train (or load) each stage at each seed, evaluate it, and record the numbers; return the record."""
    profile = get_profile(profile)
    if len(set(seeds)) < 2:
        raise ValueError(f"a spread needs at least two different seeds, got {list(seeds)}")
    numbers: dict[str, list[float]] = {}
    start = time.perf_counter()
    record_: dict[str, Any] = {}
    for stage in stages:
        for seed in seeds:
            for name, value in _stage_numbers(stage, seed, profile, progress).items():
                numbers.setdefault(name, []).append(value)
        record_ = {
            "profile": profile.name,
            "seeds": list(seeds),
            "stages": list(stages[: stages.index(stage) + 1]),
            "what": "each stage retrained with its own seed changed (upstream stages fixed), evaluated as in "
                    "notebooks 03-05",
            "machine": describe_environment(profile),
            "minutes": round((time.perf_counter() - start) / 60, 1),
            "numbers": numbers,
        }
        if record:  # after each stage: an interrupted run keeps the stages it finished
            results_path(profile).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(results_path(profile), "w") as f:
                json.dump(record_, f, indent=1)
                f.write("\n")
    return record_
