"""Which RL recipe fine-tunes the competent pipeline without harming it? A recorded search (``llmimg experiment
joint-rl-recipes``).

Each recipe is a regime with a few settings changed (:func:`~llmimg.research.joint.rl.default_config`'s
``lr`` or :class:`~llmimg.research.joint.rl.RLConfig` fields), trained at training seed 0 through
the model cache (so the recipe the experiment then uses is not trained twice) and scored by
:func:`~llmimg.research.joint.rl.evaluate`. Each is compared with the starting pipeline on the same
``val`` and ``heldout`` prompts and noise, paired. The record is ``joint-rl-recipes-<profile>.json``
in the experiment records folder (``data/experiments`` in a checkout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, describe_environment, experiments_dir, get_profile
from llmimg.core.store import atomic_write
from llmimg.research.joint import rl

# Recipe name -> (regime, changes). The first recipe (lr 1e-4 for a full UNet, as Flow-GRPO uses for LoRA) lowered
# val by several points: with gradients this small and this noisy, Adam moves every weight by about lr each step.
# The rewriter's learning rate is lr times llm_lr_factor (the generator recipes freeze the LLM, so its rate does not
# matter there). A recipe is chosen on val; heldout is the test.
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "generator_rl, lr 1e-4": ("generator_rl", {"lr": 1e-4}),
    "generator_rl, lr 3e-5": ("generator_rl", {"lr": 3e-5}),
    "generator_rl, lr 1e-5": ("generator_rl", {"lr": 1e-5}),
    "generator_rl, lr 1e-4, KL 1": ("generator_rl", {"lr": 1e-4, "kl_generator": 1.0}),
    "rewriter_rl, LLM lr 1e-5": ("rewriter_rl", {"lr": 1e-4, "llm_lr_factor": 0.1}),
    "rewriter_rl, LLM lr 1e-4": ("rewriter_rl", {"lr": 1e-4, "llm_lr_factor": 1.0}),
    # The coupled regimes: κ (the generator's gradient on the LLM) first, then μ (the cycle) at the chosen κ.
    **{f"joint, κ {k:g}": ("joint", {"coupling": k}) for k in rl.COUPLINGS},
    **{f"cycle, μ {m:g}": ("cycle", {"cycle_weight": m}) for m in rl.CYCLE_WEIGHTS},
}


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the record of ``profile`` lives (``$LLMIMG_EXPERIMENTS_DIR`` moves it)."""
    return experiments_dir() / f"joint-rl-recipes-{get_profile(profile).name}.json"


def run(profile: str | Profile | None = None, names: list[str] | None = None, *, progress: bool = True,
        record: bool = True) -> dict[str, Any]:
    """Train (or load) each recipe of ``names`` (default: all) at seed 0 and compare it with the start, paired.

    Returns ``{"profile", "machine", "start": {split: overall}, "recipes": {name: {"regime", "changes",
    "train_seconds", "val", "heldout", "vs_start": {split: paired difference}, "reward_first", "reward_last"}}}``
    and, with ``record``, writes it to :func:`results_path`.
    """
    profile = get_profile(profile)
    names = list(RECIPES) if names is None else names
    for name in names:
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose from: {', '.join(RECIPES)}")
    start = rl.start_scores(profile, progress=progress)
    out: dict[str, Any] = {"profile": profile.name, "machine": describe_environment(),
                           "n_per_category": start["n_per_category"],
                           "start": {s: start[s]["overall"] for s in ("val", "heldout")}, "recipes": {}}
    for name in names:
        regime, changes = RECIPES[name]
        result = rl.run(regime, profile, 0, progress=progress, **changes)
        rewards = [h["reward"] for h in result.history if "reward" in h]
        tenth = max(1, len(rewards) // 10)
        out["recipes"][name] = {
            "regime": regime, "changes": changes, "train_seconds": result.train_seconds,
            **{s: result.metrics[s]["overall"] for s in ("val", "heldout")},
            "vs_start": {s: rl.paired(result.metrics, start, s).as_dict() for s in ("val", "heldout")},
            "reward_first": sum(rewards[:tenth]) / tenth if rewards else None,
            "reward_last": sum(rewards[-tenth:]) / tenth if rewards else None}
    if record:
        with atomic_write(results_path(profile), "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
    return out


__all__ = ["RECIPES", "results_path", "run"]
