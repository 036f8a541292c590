"""The generator recipe search: which changes make a small diffusion model learn fast.

Each recipe is the profile's default generator (:func:`llmimg.stages.generator.default_config`)
with a few fields changed. Every recipe trains for the same number of optimiser steps
with its ShapesEval learning curve recorded along the way (``curve_every``), through the
model cache, so a recipe trained once is loaded the next time and the ``"default"``
recipe *is* the pipeline's generator. :func:`run` trains the recipes asked for and
records their curves in ``generator-recipes-<profile>.json`` in the experiment records
folder (:func:`llmimg.core.config.experiments_dir`: ``data/experiments`` in a checkout,
where the committed runs are; merged with what is there); :func:`get` reads that
record. ``llmimg experiment generator-recipes`` is the command line for it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, describe_environment, experiments_dir, get_profile
from llmimg.core.evaluation import shapes_eval, standard_error
from llmimg.core.store import atomic_write
from llmimg.stages import generator as gen_stage

# Recipe name -> the fields it changes in the default config ("train.<field>" for the training loop).
# The default's learning rate became 2e-3 after this search; the "learning rate 1e-3" rows are the
# recipes measured before that, so the record keeps the comparison that chose it.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "learning rate 1e-3": {"train.lr": 1e-3},
    "epsilon target, learning rate 1e-3": {"prediction_type": "epsilon", "train.lr": 1e-3},
    "no coordinate channels": {"coordinates": False},
    "no pooled text": {"pooled_condition": False},
    "half width": {"block_out_channels": [48, 96], "norm_num_groups": 16},
    "half width, learning rate 1e-3": {"block_out_channels": [48, 96], "norm_num_groups": 16, "train.lr": 1e-3},
}


def recipe_config(name: str, profile: str | Profile | None = None, steps: int | None = None):
    """The generator config of recipe ``name`` at ``profile``; ``steps`` shortens (or lengthens) training."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from: {', '.join(RECIPES)}")
    config = gen_stage.default_config(profile)
    changes = RECIPES[name]
    train = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("train.")}
    fields = {k: v for k, v in changes.items() if not k.startswith("train.")}
    if steps is not None:
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        train["steps"] = steps
    curve_every = config.curve_every if steps is None else max(1, steps // 4)
    return replace(config, **fields, curve_every=curve_every, train=replace(config.train, **train))


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the search's record for ``profile`` lives (``$LLMIMG_EXPERIMENTS_DIR`` moves it)."""
    return experiments_dir() / f"generator-recipes-{get_profile(profile).name}.json"


def load(profile: str | Profile | None = None) -> dict[str, Any] | None:
    """The recorded search of ``profile``, or None if it has never been run there."""
    path = results_path(profile)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def run(profile: str | Profile | None = None, names: list[str] | None = None, *, steps: int | None = None,
        progress: bool = True, record: bool = True) -> dict[str, Any]:
    """Train (or load) each recipe in ``names`` (default: all) and record its learning curve.

    With ``record=False`` nothing is written (what a notebook does: it must not change
    the committed record).

    Returns the whole record: ``{"profile", "machine", "recipes": {name: {"changes",
    "steps", "train_seconds", "curve", "two_objects"}}}``; ``curve`` holds ShapesEval points
    of one-object scenes along training (``step``, ``train_seconds``, ``n``, ``all_correct``,
    ``count_accuracy`` and the attributes), ``two_objects`` ShapesEval of the trained model
    on two-object scenes (``n``, ``all_correct`` and its ``all_correct_se``,
    ``count_accuracy``). Recipes no longer in :data:`RECIPES` are dropped from the record.
    """
    profile = get_profile(profile)
    names = list(names or RECIPES)
    configs = {name: recipe_config(name, profile, steps) for name in names}  # unknown names fail before training
    result = load(profile) or {"profile": profile.name, "recipes": {}}
    result["recipes"] = {k: v for k, v in result["recipes"].items() if k in RECIPES}
    result["machine"] = describe_environment(profile)
    for name, config in configs.items():
        gen = gen_stage.get(profile, config=config, progress=progress)
        result["recipes"][name] = {"changes": RECIPES[name], "steps": config.train.steps,
                                   "train_seconds": gen.manifest.seconds, "curve": gen.manifest.curve,
                                   "two_objects": two_object_scores(gen, profile.size("recipes.two_object_n"))}
        if record:
            results_path(profile).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(results_path(profile), "w") as f:  # after each recipe: an interruption keeps the rest
                f.write(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def two_object_scores(gen: Any, n: int) -> dict[str, float]:
    """ShapesEval of ``gen`` on the full descriptions of ``n`` two-object ``val`` scenes (25 steps).

    The learning curve scores one object only (it runs during training); two objects are
    where recipes differ most, so each trained recipe is scored on them once.
    """
    descriptions = [s.description for s in gen_stage.eval_samples(gen.config, n, objects=2)]
    judged = shapes_eval(gen.generate(descriptions, seed=0, check=False), descriptions)
    return {"n": len(descriptions), "all_correct": judged.all_correct,
            "all_correct_se": standard_error(judged.all_correct, len(descriptions)),
            "count_accuracy": judged.count_accuracy}


def get(profile: str | Profile | None = None, *, progress: bool = True) -> dict[str, Any]:
    """The recorded search of ``profile``; if there is none, run it (without recording it).

    At ``smoke`` that is every recipe (seconds each); at ``default`` and ``full`` only
    ``"default"``, the pipeline's own generator (the others take as long each: run them
    with ``llmimg experiment generator-recipes``).
    """
    profile = get_profile(profile)
    return load(profile) or run(profile, None if profile.name == "smoke" else ["default"], progress=progress,
                                record=False)


def table(record: dict[str, Any]) -> Any:
    """One row per recipe and curve point: a pandas DataFrame for plots and tables."""
    import pandas as pd

    rows = [{"recipe": name, **point} for name, r in record["recipes"].items() for point in r["curve"]]
    return pd.DataFrame(rows)


__all__ = ["RECIPES", "get", "load", "recipe_config", "results_path", "run", "table", "two_object_scores"]
