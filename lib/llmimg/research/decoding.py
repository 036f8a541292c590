"""Does constrained decoding with jump-forward make the LLM faster, and keep its descriptions faithful? (issue 28)

``llmimg experiment decoding`` loads the profile's LLM of today's world (training it if the
cache has none) and records in ``data/experiments/decoding-<profile>.json``:

* ``forced``: the share of tokens the grammar and the prompt force in real descriptions
  (``val`` scenes, each written in its prompt's order);
* ``follows``: per mode (:data:`~llmimg.speed.decoding.MODES`), the share of ``val`` prompts
  whose description follows the prompt, with n and standard error, and the passes it took;
* ``batch``: the three modes timed side by side on one batch of prompts (interleaved
  trials: median, min and max milliseconds, forward passes);
* ``single``: the same for one prompt at a time, per prompt, and the median over prompts;
* ``tv``: whether constrained sampling fills in the open attributes as the checker's
  sampling does: both TV distances to the oracle upsampler, and their paired difference;
* ``planner``: the GenEval-shaped world's layout planner (its LLM, trained if missing) on
  the protocol's ``val`` prompts, with its checker and with jump-forward: the share of
  layouts that follow the prompt, the passes and milliseconds for a batch, and the open
  attributes' TV distance to the oracle planner.

The verdict on speed is the ratio of medians measured in the same run; the trials' spread
says how far a single trial strays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from llmimg.core.config import Profile, describe_environment, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation.protocol import load_eval_set
from llmimg.core.evaluation.statistics import beyond_noise
from llmimg.pipelines.protocol import subset
from llmimg.research.records import read_record, record_path, write_record
from llmimg.speed.decoding import MODES, decoding_costs, forced_fraction, write_and_count
from llmimg.stages import llm
from llmimg.stages.llm.metrics import planner_tv, tv_difference

NAME = "decoding"


def run(profile: str | Profile | None = None, *, progress: bool = True, record: bool = True) -> dict[str, Any]:
    """Measure the three ways to write at ``profile`` and record them; returns the record."""
    profile = get_profile(profile)
    start = time.perf_counter()
    model = llm.get(profile, progress=progress)
    world = ShapesWorld(seed=0)
    n = profile.pick(smoke=16, default=500, full=1000)
    batch, singles, repeats = profile.pick(smoke=(4, 2, 1), default=(32, 8, 5), full=(32, 8, 5))
    samples = list(world.samples(n, "val"))
    prompts = [s.prompt for s in samples]
    runs = {mode: write_and_count(model, prompts, mode) for mode in MODES}
    one = [decoding_costs(model, [p], repeats=repeats) for p in prompts[:singles]]
    result = {
        "profile": profile.name,
        "what": "the LLM of today's world writing descriptions of val prompts three ways: sampling with the checker, "
                "constrained decoding one pass per token (masked), and with jump-forward",
        "machine": describe_environment(profile),
        "forced": forced_fraction(samples),
        "follows": {m: {k: v for k, v in runs[m].items() if k != "descriptions"} for m in MODES},
        "batch": {"size": batch, "repeats": repeats, **decoding_costs(model, prompts[:batch], repeats=repeats)},
        "single": {"prompts": prompts[:singles], "repeats": repeats, "per_prompt": one,
                   "median_ms": {m: float(np.median([c[m]["ms_median"] for c in one])) for m in MODES},
                   "median_passes": {m: float(np.median([c[m]["passes"] for c in one])) for m in MODES}},
    }
    tv = tv_difference(prompts, runs["jump_forward"]["descriptions"], runs["checker"]["descriptions"])
    verdict = ("not measured: a side wrote no description that follows its prompt" if not np.isfinite(tv["diff"])
               else "differs" if beyond_noise(tv["diff"], tv["se"]) else "within noise")
    result["tv"] = {**tv, "n": n, "verdict": verdict}
    result["planner"] = _planner(profile, batch, repeats, progress)
    result["minutes"] = round((time.perf_counter() - start) / 60, 1)
    if record:
        write_record(NAME, profile, result)
    return result


def _planner(profile: Profile, batch: int, repeats: int, progress: bool) -> dict[str, Any]:
    """The GenEval-shaped world's planner with its checker and with jump-forward, on the protocol's val prompts."""
    planner = llm.get(profile, progress=progress, world="geneval")
    prompts = [item.prompt for item in subset(load_eval_set("val"), profile.pick(smoke=2, default=None,
                                                                                     full=None)).items]
    modes = ("checker", "jump_forward")
    out: dict[str, Any] = {"n": len(prompts)}
    for mode in modes:
        row = write_and_count(planner, prompts, mode)
        row["open_attribute_tv"] = planner_tv(prompts, row.pop("descriptions"))
        out[mode] = row
    out["batch"] = {"size": batch, "repeats": repeats,
                    **decoding_costs(planner, prompts[::max(1, len(prompts) // batch)][:batch], repeats=repeats,
                                     modes=modes)}
    return out


def load(profile: str | Profile | None = None) -> dict[str, Any]:
    """The recorded run of ``profile``; a one-line error naming the command if there is none."""
    return read_record(NAME, profile)


def results_path(profile: str | Profile | None = None) -> Path:
    """Where the run of ``profile`` is recorded."""
    return record_path(NAME, profile)


__all__ = ["NAME", "load", "results_path", "run"]
