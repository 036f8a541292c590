"""Notebook 07's whole experiment as plain values: every regime at every seed, the start, the verdicts
(``llmimg eval joint --world geneval --json``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from llmimg.core.config import Profile, get_profile
from llmimg.core.evaluation.statistics import paired_difference
from llmimg.research.joint import rl
from llmimg.research.joint.scoring import bits_of, paired_over_seeds, seed_mean

# Each verdict of the record: (regime, the regime it is read against).
VERDICTS = (("joint_rl", "separate"), ("joint_rl", "generator_rl"), ("joint_rl", "rewriter_rl"),
            ("joint", "separate"), ("cycle", "separate"), ("cycle", "joint"))


def record(profile: str | Profile | None = None, regimes: Sequence[str] = rl.REGIMES,
           seeds: Sequence[int] = rl.SEEDS, *, progress: bool = True) -> dict[str, Any]:
    """The whole experiment as plain values (``llmimg eval joint --world geneval --json``; notebook 07).

    Every regime at every seed (trained where the cache lacks it) and the starting
    pipeline, all on the same prompts and noise. ``runs``: each regime's per-seed
    :func:`evaluate` record with its training seconds and history; ``start``: the start's.
    ``summary``: per regime and split, the mean over seeds (``seed_mean``) and the paired
    comparison with the start (``vs_start``, :func:`paired_over_seeds`), in ``overall``
    and ``counting``; on ``val`` also the hacking measures against the start (the
    stricter judge, paired image by image; CMMD, faithfulness and TV as means over seeds).
    ``verdicts``: each pair of :data:`VERDICTS` (``joint_rl`` against ``separate`` and each
    single-model RL regime; ``joint`` and ``cycle`` against ``separate``, ``cycle`` against
    ``joint``), paired seed by seed, on both splits. ``coadaptation``: ``joint_rl``'s generator drawn
    from the starting LLM's descriptions instead of its own LLM's, paired per seed on ``val``.
    """
    profile = get_profile(profile)
    llm, generator = rl.start(profile, progress=progress)
    n = rl.eval_size(profile)
    start_metrics = rl.evaluate(llm, generator, n)
    runs = {r: [rl.run(r, profile, s, progress=progress) for s in seeds] for r in regimes}
    out: dict[str, Any] = {"profile": profile.name, "world": "geneval", "seeds": list(seeds),
                           "n_per_category": n, "budget": rl.default_config(profile).as_dict(), "start": start_metrics,
                           "runs": {r: [{"seed": s, "train_seconds": x.train_seconds, "metrics": x.metrics,
                                         "history": x.history} for s, x in zip(seeds, rs)] for r, rs in runs.items()}}
    summary: dict[str, Any] = {}
    for r, rs in runs.items():
        ms = [x.metrics for x in rs]
        entry: dict[str, Any] = {}
        for split in ("val", "heldout"):
            entry[split] = {"seed_mean": seed_mean(ms, split), "vs_start": {
                c: paired_over_seeds(ms, [start_metrics] * len(ms), split, c) for c in ("overall", "counting")}}
        strict = [paired_difference(bits_of(m["strict"]), bits_of(start_metrics["strict"])) for m in ms]
        entry["hacking"] = {
            "strict": {"rate": float(np.mean([m["strict"]["rate"] for m in ms])),
                       "vs_start": [{"diff": d.diff, "se": d.se} for d in strict]},
            "cmmd": {"mean": float(np.mean([m["cmmd"] for m in ms])), "per_seed": [m["cmmd"] for m in ms]},
            "faithfulness": float(np.mean([m["faithfulness"]["rate"] for m in ms])),
            "planner_tv": float(np.mean([m["planner_tv"]["open_attribute_tv"] for m in ms]))}
        summary[r] = entry
    out["summary"] = summary
    out["verdicts"] = {f"{a} vs {b}": {split: {c: paired_over_seeds(
        [x.metrics for x in runs[a]], [x.metrics for x in runs[b]], split, c) for c in ("overall", "counting")}
        for split in ("val", "heldout")} for a, b in VERDICTS if a in runs and b in runs}
    if "joint_rl" in runs:
        swapped = [{"val": rl.protocol_score(llm, x.image_generator, n, "val")[0], "n_per_category": n}
                   for x in runs["joint_rl"]]
        out["coadaptation"] = {"own_llm_minus_start_llm": paired_over_seeds(
            [x.metrics for x in runs["joint_rl"]], swapped, "val"), "start_llm": [m["val"]["overall"] for m in swapped]}
    return out


__all__ = ["VERDICTS", "record"]
