"""Claim 2 (notebook 06): does the LLM stage make generation faster?

Two settings of the GenEval-shaped world, swept over the number of denoising steps on a
prompt set of the evaluation protocol (:func:`speed_experiment`): the pipeline with its
LLM, and the generator trained on prompts drawn from the prompt as typed (the fair arm
without an LLM). Each point has GenEval's overall score, its standard error and the wall
time per image, LLM included; all points draw the same prompts from the same noise, so
any two pair up. :func:`equal_time_pairs` compares the settings at equal wall time, and
:func:`time_to_target` measures how long each takes to reach a quality fixed before the
run, with the ratio's uncertainty from a bootstrap over prompts.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from llmimg.core import seeding
from llmimg.core.data.geneval import GENEVAL_CATEGORIES
from llmimg.core.evaluation.protocol import EvalSet, ProtocolScore, judge_protocol
from llmimg.pipelines.protocol import compare, draw_eval_set

N_BOOTSTRAP = 1000


def speed_experiment(settings: dict[str, tuple[Any, bool]], eval_set: EvalSet,
                     steps: Sequence[int] = (1, 2, 4, 8, 16)) -> tuple[Any, dict[tuple[str, int], ProtocolScore]]:
    """Each setting (name -> ``(pipeline, upsample)``) drawn at each number of ``steps``: a pandas table and the
    :class:`ProtocolScore` of every point.

    The table has per point ``setting``, ``steps``, ``ms_per_image`` (the whole prompt
    set's wall time, LLM included, over its images), GenEval's ``overall`` and
    ``overall_se``, and ``n_prompts``/``n_images``.
    """
    import pandas as pd

    rows, scores = [], {}
    for name, (pipe, upsample) in settings.items():
        for n_steps in steps:
            t0 = time.perf_counter()
            images, _ = draw_eval_set(pipe, eval_set, upsample=upsample, num_inference_steps=n_steps)
            ms = (time.perf_counter() - t0) * 1000 / len(images)
            score = scores[name, n_steps] = judge_protocol(eval_set, images)
            rows.append({"setting": name, "steps": n_steps, "ms_per_image": ms, "overall": score.overall.rate,
                         "overall_se": score.overall.se, "n_prompts": score.overall.n_prompts,
                         "n_images": score.overall.n_images})
    return pd.DataFrame(rows), scores


def equal_time_pairs(table: Any, scores: dict[tuple[str, int], ProtocolScore], a: str, b: str) -> list[dict[str, Any]]:
    """Setting ``a`` at each of its points against ``b`` at its cheapest point that took at least as long.

    ``b`` gets at least ``a``'s wall time, so "``a`` ahead" means better at equal (or less)
    time. Each row holds both points and the paired comparison of their overall scores
    (the same prompts and noise; :func:`llmimg.pipelines.protocol.compare`).
    """
    rows_b = table[table["setting"] == b].sort_values("ms_per_image")
    out = []
    for _, row in table[table["setting"] == a].iterrows():
        slower = rows_b[rows_b["ms_per_image"] >= row["ms_per_image"]]
        if len(slower):
            other = slower.iloc[0]
            d = compare(scores[a, int(row["steps"])], scores[b, int(other["steps"])])
            out.append({f"{a} steps": int(row["steps"]), f"{a} ms": row["ms_per_image"],
                        f"{b} steps": int(other["steps"]), f"{b} ms": other["ms_per_image"],
                        "difference": d.diff, "se": d.se, "verdict": d.verdict(a, b)})
    return out


def _resampled_overall(scores: list[ProtocolScore], draws: int, seed: int) -> np.ndarray:
    """GenEval's overall of each score under ``draws`` resamples of the prompts (row 0: the sample itself).

    Prompts are resampled within each category (the protocol draws each category's prompts
    on their own), the same resample for every score, so the points stay paired.
    """
    rng = seeding.numpy_rng(seed, "bootstrap")
    categories = np.array(scores[0].categories)
    per_prompt = np.stack([s.correct.mean(axis=1) for s in scores])  # (scores, prompts)
    overall = np.zeros((draws + 1, len(scores)))
    for category in GENEVAL_CATEGORIES:
        idx = np.flatnonzero(categories == category)
        picks = np.vstack([np.arange(len(idx)), rng.integers(0, len(idx), (draws, len(idx)))])
        overall += per_prompt[:, idx][:, picks].mean(axis=2).T  # (draws + 1, scores)
    return overall / len(GENEVAL_CATEGORIES)


def time_to_target(table: Any, scores: dict[tuple[str, int], ProtocolScore], target: float, *,
                   baseline: str, faster: str, draws: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """The least wall time per image at which each setting reaches ``target`` overall, and the ratio
    ``baseline``'s time / ``faster``'s, with its uncertainty.

    ``target`` must be fixed before the run. A setting's time is that of its cheapest
    point whose overall reaches the target (None if none does). The uncertainty comes
    from ``draws`` bootstrap resamples of the prompts: ``ratio_interval`` holds the 2.5 and
    97.5 percentiles of the ratio over the resamples in which both settings reach the
    target, and ``never`` the share of resamples in which each setting never does.
    """
    keys = [(str(r["setting"]), int(r["steps"])) for _, r in table.iterrows()]
    ms = np.asarray(table["ms_per_image"], dtype=float)
    overall = _resampled_overall([scores[k] for k in keys], draws, seed)
    settings = {name: np.array([k[0] == name for k in keys]) for name in (baseline, faster)}
    times = {}
    for name, mine in settings.items():
        reached = np.where(overall[:, mine] >= target, ms[mine], np.inf)
        times[name] = reached.min(axis=1)  # (draws + 1,)
    with np.errstate(invalid="ignore"):  # inf / inf where neither reaches the target: NaN, counted as not both
        ratio = times[baseline] / times[faster]
    both = np.isfinite(times[baseline][1:]) & np.isfinite(times[faster][1:])
    interval = tuple(float(q) for q in np.percentile(ratio[1:][both], [2.5, 97.5])) if both.any() else None

    def finite(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"target": target, "ms": {name: finite(t[0]) for name, t in times.items()},
            "ratio": finite(ratio[0]) if np.isfinite(times[faster][0]) else None, "ratio_interval": interval,
            "never": {name: float(np.mean(~np.isfinite(t[1:]))) for name, t in times.items()}, "draws": draws}


__all__ = ["equal_time_pairs", "speed_experiment", "time_to_target"]
