"""What should the pretrained pipeline's verifier compare? Re-ranking the LLM's candidates, measured (notebook 09).

The pretrained pipeline writes ``n`` candidate descriptions per prompt and keeps one
(:mod:`llmimg.pipelines.pretrained.rerank`): the first (``"none"``), the one whose text CLIP
finds nearest the prompt (``"text"``), or the one whose *image* CLIP finds nearest the
prompt (``"image"``, best-of-n). On ShapesWorld the judge is exact, so
:func:`compare_reranking` can tell which choice serves the prompt: it draws every candidate
of every prompt from the prompt's own noise (:meth:`~llmimg.pipelines.pretrained.PretrainedPipeline.draw_candidates`),
reads off each mode's choice, draws the typed prompt itself from the same noise, and scores
every kept image with ShapesEval against the *typed* prompt. All rows share prompts and
noise, so they are compared item by item (:func:`llmimg.core.evaluation.paired_difference`).

:func:`run` measures a pipeline on models trained on ShapesWorld (``world="trained"``) or on
tiny random ones (``world="tiny"``: rates near 0, the code path only), and records the result
in ``reranking-<profile>.json`` in the experiment records folder; ``llmimg experiment
reranking`` is its command line.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.config import Profile, describe_environment, experiments_dir, get_profile, show_progress
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import paired_difference, rate_with_se, shapes_eval
from llmimg.core.store import atomic_write
from llmimg.pipelines.pretrained import PretrainedPipeline, pick_best

# Each row of the comparison: what the generator drew for a prompt.
ROWS: dict[str, str] = {
    "prompt": "the typed prompt itself, no LLM",
    "none": "the LLM's first candidate (no re-ranking)",
    "text": "the candidate whose text CLIP finds nearest the prompt",
    "image": "the candidate whose image CLIP finds nearest the prompt (best-of-n)",
    "oracle": "any candidate the judge accepts (a perfect verifier: the ceiling of best-of-n, not a method)",
}
# The paired comparisons recorded: (a, b) is "a vs b", positive when a is ahead.
COMPARISONS: tuple[tuple[str, str], ...] = (("text", "none"), ("image", "none"), ("prompt", "none"),
                                            ("image", "text"), ("prompt", "text"))
WORLDS = ("trained", "tiny")


def compare_reranking(pipe: PretrainedPipeline, n_prompts: int, n_candidates: int = 4, seed: int = 0, *,
                      split: str = "val", batch_size: int = 16, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, progress: bool = False) -> dict[str, Any]:
    """Draw ``n_prompts`` ShapesWorld prompts of ``split`` under every re-ranking mode, paired, and judge them.

    Prompt k's noise and the LLM's sampling come from ``(seed, "noise", k)``, whatever its
    batch; every row draws from that noise. Returns a dict: ``rows`` (per row of
    :data:`ROWS`: ``all_correct`` with ``all_correct_se`` and ``n``, and ``clip_score``, the
    mean CLIPScore of the kept image with the prompt, the quantity ``"image"`` maximises; None
    for ``"oracle"``);
    ``paired`` (per comparison of :data:`COMPARISONS`, ``"a vs b"``: the
    :class:`~llmimg.core.evaluation.PairedDifference` fields, its ``verdict`` and ``sentence``);
    ``candidate_all_correct`` (the rate over all candidates: what one draw of the LLM gets);
    ``per_item`` (each row's 0/1 per prompt), ``chosen`` (the text and image choices),
    ``prompts``; ``ms_per_prompt`` (the draw of all candidates, the cost of ``"image"``,
    and of the prompt alone) and the settings.
    """
    if n_prompts < 1 or n_candidates < 2:
        raise ValueError(f"need at least one prompt and two candidates to choose from, got {n_prompts} and "
                         f"{n_candidates}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    prompts = [s.prompt for s in ShapesWorld().samples(n_prompts, split)]
    call = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "output_type": "pil"}
    correct, raw_correct, image_cos, raw_cos, text_chosen, image_chosen = [], [], [], [], [], []
    ms = {"candidates": 0.0, "prompt": 0.0}
    starts = range(0, n_prompts, batch_size)
    if show_progress(progress):
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="re-ranking", unit="batch")
    for start in starts:
        batch = prompts[start:start + batch_size]
        drawn = pipe.draw_candidates(batch, n_candidates, generator=seeding.noise_generators(seed, len(batch), start),
                                     **call)
        up = drawn.upsampled
        images = [im for row in drawn.images for im in row]
        judged = shapes_eval(images, [p for p in batch for _ in range(n_candidates)])
        correct.append(np.array([r.all_correct for r in judged.records], dtype=np.int64).reshape(len(batch), -1))
        image_cos.append(up.scores)
        image_chosen += up.chosen
        text_chosen += pick_best(pipe.clip.rank(batch, up.candidates)[1])
        raw = pipe(batch, upsample=False, generator=seeding.noise_generators(seed, len(batch), start), **call)
        raw_correct += [r.all_correct for r in shapes_eval(raw.images, batch).records]
        raw_cos.append(pipe.score_images(raw.images, batch))
        ms["candidates"] += drawn.timings["total"]
        ms["prompt"] += raw.timings["total"]
    correct_all = np.concatenate(correct)
    per_item = kept(correct_all, np.array(raw_correct, dtype=np.int64), text_chosen, image_chosen)
    cos, items = torch.cat(image_cos), np.arange(n_prompts)
    clip_cos = {"prompt": torch.cat(raw_cos), "none": cos[:, 0], "text": cos[items, text_chosen],
                "image": cos[items, image_chosen]}
    rows = {}
    for name, scores in per_item.items():
        rate = rate_with_se(scores)
        clip_score = float(100 * clip_cos[name].clamp(min=0).mean()) if name in clip_cos else None
        rows[name] = {"all_correct": rate.rate, "all_correct_se": rate.se, "n": rate.n, "clip_score": clip_score}
    paired = {}
    for a, b in COMPARISONS:
        diff = paired_difference(per_item[a], per_item[b])
        paired[f"{a} vs {b}"] = {**diff.as_dict(), "verdict": diff.verdict(a, b), "sentence": diff.sentence(a, b)}
    return {"rows": rows, "paired": paired, "candidate_all_correct": float(correct_all.mean()),
            "per_item": {k: v.tolist() for k, v in per_item.items()},
            "chosen": {"text": text_chosen, "image": image_chosen}, "prompts": prompts,
            "ms_per_prompt": {k: v / n_prompts for k, v in ms.items()},
            "n_prompts": n_prompts, "n_candidates": n_candidates, "seed": seed, "split": split,
            "num_inference_steps": pipe.config.num_inference_steps if num_inference_steps is None
            else num_inference_steps,
            "guidance_scale": pipe.config.guidance_scale if guidance_scale is None else guidance_scale}


def kept(correct: np.ndarray, prompt_correct: np.ndarray, text_chosen: list[int],
         image_chosen: list[int]) -> dict[str, np.ndarray]:
    """Each row of :data:`ROWS`, 0/1 per prompt, from the judge's verdict on every candidate and the choices.

    ``correct[k, j]``: whether prompt k's candidate j's image follows the prompt;
    ``prompt_correct[k]``: whether the image drawn from the prompt itself does;
    ``text_chosen`` / ``image_chosen``: the candidate each mode kept, per prompt.
    """
    correct = np.asarray(correct, dtype=np.int64)
    items = np.arange(correct.shape[0])
    if not (len(prompt_correct) == len(text_chosen) == len(image_chosen) == correct.shape[0]):
        raise ValueError("every row needs one entry per prompt")
    return {"prompt": np.asarray(prompt_correct, dtype=np.int64), "none": correct[:, 0],
            "text": correct[items, text_chosen], "image": correct[items, image_chosen],
            "oracle": correct.max(axis=1)}


def results_path(profile: str | Profile | None = None, world: str = "trained") -> Path:
    """Where the comparison for ``profile`` is recorded (the tiny world's apart: it must never pass for a result)."""
    _check_world(world)
    suffix = "" if world == "trained" else f"-{world}"
    return experiments_dir() / f"reranking-{get_profile(profile).name}{suffix}.json"


def load(profile: str | Profile | None = None, world: str = "trained") -> dict[str, Any] | None:
    """The recorded comparison of ``profile`` in ``world``, or None if it has never been run."""
    path = results_path(profile, world)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose one of {', '.join(WORLDS)}")


def _pipeline(world: str, folder: Path, profile: Profile) -> PretrainedPipeline:
    from llmimg.pipelines.pretrained import tiny_pipeline

    if world == "tiny":
        return tiny_pipeline(folder)
    from llmimg.pipelines.pretrained.offline import trained_pipeline  # the pipeline on ShapesWorld-trained models

    return trained_pipeline(folder, profile)


def run(profile: str | Profile | None = None, *, world: str = "trained", n_prompts: int | None = None,
        n_candidates: int | None = None, seed: int = 0, folder: str | Path | None = None, progress: bool = True,
        record: bool = True) -> dict[str, Any]:
    """Build the ``world``'s pretrained pipeline, compare the re-ranking modes on it and record the result.

    ``n_prompts`` and ``n_candidates`` default to the profile's sizes (``reranking.*``);
    ``folder`` is where the pipeline's models are written (default: a temporary folder).
    With ``record=False`` nothing is written (what a notebook does). Returns the
    :func:`compare_reranking` result with ``profile``, ``world``, ``what``, ``machine`` and ``minutes``.
    """
    _check_world(world)
    profile = get_profile(profile)
    n_prompts = profile.size("reranking.n_prompts") if n_prompts is None else n_prompts
    n_candidates = profile.size("reranking.n_candidates") if n_candidates is None else n_candidates
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmimg-reranking-") as scratch:
        pipe = _pipeline(world, Path(folder) if folder is not None else Path(scratch), profile)
        result = compare_reranking(pipe, n_prompts, n_candidates, seed, progress=progress)
    result = {"profile": profile.name, "world": world,
              "what": "ShapesEval all-correct against the typed prompt of the image each re-ranking mode keeps; "
                      "every row drawn from the same prompts and noise" +
                      ("" if world == "trained" else "; tiny RANDOM models: the code path only, not a result"),
              "rows_meaning": ROWS, **result, "machine": describe_environment(profile),
              "minutes": round((time.perf_counter() - start) / 60, 2)}
    if record:
        path = results_path(profile, world)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            f.write(json.dumps(result, indent=1) + "\n")
    return result


__all__ = ["COMPARISONS", "ROWS", "WORLDS", "compare_reranking", "kept", "load", "results_path", "run"]
