"""Scoring a fine-tuned pipeline for notebook 07 (:mod:`.rl`): the protocol per image, what the reward does not
see, and the paired comparisons over training seeds."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from llmimg.core import seeding
from llmimg.core.data.geneval import plan_layout
from llmimg.core.data.render import render
from llmimg.core.evaluation import judge_images
from llmimg.core.evaluation.distances import cmmd
from llmimg.core.evaluation.geneval_judge import prompts_followed
from llmimg.core.evaluation.protocol import (compare_overall, compare_settings, judge_protocol, load_eval_set,
                                             score_protocol)
from llmimg.core.evaluation.statistics import rate_with_se
from llmimg.pipelines.protocol import draw_eval_set, subset
from llmimg.pipelines.shapes import ShapesPipeline
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

STRICT_FILL = 0.6  # the stricter reading of the pixels: a shape must fill 60% of its mask, not the judge's 40%

def evaluate(llm: llm_stage.ShapesLLM, generator: gen_stage.ShapesGenerator, n_per_category: int,
             ) -> dict[str, Any]:
    """The pipeline on the protocol's ``val`` and ``heldout`` sets (first ``n_per_category`` prompts of each
    category, their fixed noise seeds), and what the reward does not see.

    Per split: ``overall`` and per-category rates with standard errors over prompts, and
    ``per_image`` (0/1 in the set's order, to pair two runs). On ``val`` also:
    ``strict`` (the images judged by a stricter reading of the pixels, the
    fill threshold ``STRICT_FILL``), ``cmmd`` (CLIP-space distance of the images to renders
    of oracle layouts of the same prompts), ``faithfulness`` (the LLM's first draws that
    keep everything the prompt states) and ``planner_tv`` (the distribution of what the
    prompts leave open, against the oracle planner's).
    """
    out: dict[str, Any] = {"n_per_category": n_per_category}
    for split in ("val", "heldout"):
        out[split], images = protocol_score(llm, generator, n_per_category, split)
        if split != "val":
            continue
        prompts = subset(load_eval_set(split), n_per_category).image_prompts()
        strict = prompts_followed(judge_images(images, min_fill=STRICT_FILL), prompts)
        out["strict"] = {**rate_with_se(strict)._asdict(), "per_image": _bits(strict)}
        out["cmmd"] = clip_distance(llm.clip, images, prompts)
        firsts = list(dict.fromkeys(prompts))
        written = llm.upsample(firsts, seed=0, max_tries=1, details=True)
        out["faithfulness"] = rate_with_se(np.array(written.faithful, dtype=float))._asdict()
        out["planner_tv"] = llm_stage.planner_tv(firsts, written.descriptions)
    return out


def protocol_score(llm: llm_stage.ShapesLLM, generator: gen_stage.ShapesGenerator, n_per_category: int,
                   split: str = "val") -> tuple[dict[str, Any], np.ndarray]:
    """The pipeline of ``llm`` and ``generator`` on the first ``n_per_category`` prompts of each category of the
    protocol's ``split`` set: its score (with ``per_image``, 0/1 in the set's order) and the images."""
    pipe = ShapesPipeline.from_stages(llm, generator)
    pipe.set_progress_bar_config(disable=True)
    eval_set = subset(load_eval_set(split), n_per_category)
    images, _ = draw_eval_set(pipe, eval_set, upsample=True)
    score = judge_protocol(eval_set, images)
    return {**score.as_dict(), "per_image": _bits(score.per_image())}, images


def _bits(correct: Any) -> str:
    return "".join("01"[int(x)] for x in correct)


def clip_distance(clip: clip_stage.ShapesCLIP, images: np.ndarray, prompts: Sequence[str]) -> float:
    """CMMD between the CLIP image embeddings of ``images`` and of renders of oracle layouts of the same prompts."""
    real = np.stack([render(plan_layout(p, seeding.numpy_rng(0, "eval", k))) for k, p in enumerate(prompts)])
    embed = lambda x: clip.encode_image(x).cpu().numpy()  # noqa: E731
    return float(cmmd(embed(images), embed(real)))


def _score(metrics: dict[str, Any], split: str) -> Any:
    eval_set = subset(load_eval_set(split), metrics["n_per_category"])
    return score_protocol(eval_set, np.array([c == "1" for c in metrics[split]["per_image"]]))


def paired(a: dict[str, Any], b: dict[str, Any], split: str = "val", category: str = "overall") -> Any:
    """``a`` against ``b`` (two :func:`evaluate` records on the same prompts and noise), paired, in ``category``."""
    sa, sb = _score(a, split), _score(b, split)
    return compare_overall(sa, sb) if category == "overall" else compare_settings(sa, sb, category)


def seed_mean(runs: Sequence[dict[str, Any]], split: str = "val") -> dict[str, Any]:
    """The regime's overall rate on ``split`` averaged over training seeds, with the seeds' spread (se over seeds)."""
    rates = np.array([r[split]["overall"]["rate"] for r in runs])
    se = float(rates.std(ddof=1) / math.sqrt(len(rates))) if len(rates) > 1 else float("nan")
    return {"mean": float(rates.mean()), "se_over_seeds": se, "seeds": len(rates), "rates": rates.tolist()}


def paired_over_seeds(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], split: str = "val",
                      category: str = "overall") -> dict[str, Any]:
    """Regime ``a`` against ``b``, seed by seed paired on the same prompts and noise, then over seeds.

    Each seed's paired difference has a standard error over prompts; the mean over seeds
    has the spread of those differences over seeds (``se``, which includes training
    noise) beside the prompts' part (``se_prompts``). The verdict is the course's rule
    on ``se``: real at two standard errors. ``detectable`` is the difference this
    experiment could have called real (2 ``se``): the power statement of a null (0 when the
    two agree on every image: then the prompts carry no error, and the seeds none either).
    """
    diffs = [paired(x, y, split, category) for x, y in zip(a, b)]
    d = np.array([x.diff for x in diffs])
    over_seeds = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    prompts_se = float(math.sqrt(sum(x.se**2 for x in diffs)) / len(d))
    se = max(over_seeds, prompts_se) if math.isfinite(over_seeds) else prompts_se
    mean = float(d.mean())
    # Strict signs: two settings with the same verdict on every image differ by 0 ± 0, a tie.
    verdict = "ahead" if mean > 0 and mean >= 2 * se else "behind" if mean < 0 and mean <= -2 * se else "tie"
    return {"difference": mean, "se": se, "se_prompts": prompts_se, "se_seeds": over_seeds,
            "per_seed": d.tolist(), "verdict": verdict, "detectable": 2 * se}


def bits_of(record: dict[str, Any]) -> np.ndarray:
    return np.array([c == "1" for c in record["per_image"]], dtype=float)


__all__ = ["STRICT_FILL", "bits_of", "clip_distance", "evaluate", "paired", "paired_over_seeds", "protocol_score",
           "seed_mean"]
