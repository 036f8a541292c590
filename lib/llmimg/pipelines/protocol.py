"""The pipeline on the evaluation protocol (issue 26): every prompt set drawn with the LLM on and off, paired.

:func:`draw_eval_set` draws every image of a prompt set (:mod:`llmimg.core.evaluation.protocol`):
image j of a prompt gets the noise of its fixed seed, and the LLM's seed is read from the
same generator, so the LLM on and off draw from the same noise. :func:`evaluate_protocol`
does it both ways, judges every image against the prompt as typed, and compares the two
settings category by category with the course's paired rule
(:func:`~llmimg.core.evaluation.protocol.compare_settings`: a difference is real at two
paired standard errors). It also reports the planner's faithfulness: the share of prompts
whose description, after the checker's redraws, keeps everything the prompt asks for.

"LLM off" feeds the prompt to a generator trained on descriptions, which it has never
seen written so short; the fair baseline without an LLM is a generator trained on the
prompts themselves (:func:`prompt_trained_config`). Given one (``prompt_trained=``),
:func:`evaluate_protocol` draws it as a third setting and compares the LLM with it too.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from llmimg.core.config import Profile, show_progress
from llmimg.core.data.geneval import CATEGORIES
from llmimg.core.evaluation.protocol import (EvalSet, ProtocolScore, compare_overall, compare_settings,
                                             judge_protocol, load_eval_set, score_protocol)
from llmimg.core.evaluation.statistics import rate_with_se
from llmimg.core.text import world_of
from llmimg.pipelines.shapes import ShapesPipeline
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

SETTINGS: dict[str, bool] = {"llm_on": True, "llm_off": False}  # setting name -> the pipeline's `upsample`
PROMPT_TRAINED = "prompt_trained"  # the third setting: a generator trained on prompts, drawn from the prompt


def prompt_trained_config(profile: str | Profile | None = None) -> gen_stage.GeneratorConfig:
    """The GenEval-shaped world's generator recipe trained on the prompts instead of the descriptions.

    Same UNet, data, steps and seed as the pipeline's generator; only the training texts
    differ (``prompt_rate=1``). It is the fair arm without an LLM: a text-to-image model
    trained on the text it will be given. No learning curve is kept (the curve scores
    descriptions).
    """
    return replace(gen_stage.default_config(profile, "geneval"), prompt_rate=1.0, curve_every=0)


def stages(profile: str | Profile | None = None, *, progress: bool = True) -> tuple[Any, Any, Any]:
    """The GenEval-shaped world's LLM (with its CLIP), its generator, and the generator trained on prompts
    (:func:`prompt_trained_config`), each from the cache (trained first if missing)."""
    clip = clip_stage.get(profile, progress=progress, world="geneval")
    return (llm_stage.get(profile, clip=clip, progress=progress),
            gen_stage.get(profile, clip=clip, progress=progress, world="geneval"),
            gen_stage.get(profile, config=prompt_trained_config(profile), clip=clip, progress=progress))


def as_pipelines(llm: Any, *generators: Any) -> tuple[ShapesPipeline, ...]:
    """One pipeline per generator, all on ``llm`` and its CLIP, their progress bars off."""
    pipes = tuple(ShapesPipeline.from_stages(llm, g) for g in generators)
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    return pipes


def subset(eval_set: EvalSet, n_per_category: int | None) -> EvalSet:
    """The first ``n_per_category`` prompts of each category (all of them for None): a smaller run, same seeds."""
    if n_per_category is None:
        return eval_set
    if n_per_category < 1:
        raise ValueError(f"n_per_category must be at least 1, got {n_per_category}")
    seen: dict[str, int] = {}
    items = []
    for item in eval_set.items:
        seen[item.category] = seen.get(item.category, 0) + 1
        if seen[item.category] <= n_per_category:
            items.append(item)
    return EvalSet(eval_set.split, eval_set.version, eval_set.images_per_prompt, tuple(items))


def draw_eval_set(pipe: Any, eval_set: EvalSet, *, upsample: bool, num_inference_steps: int | None = None,
                  batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, list[bool] | None]:
    """Every image of ``eval_set`` (uint8, (N, H, W, 3), in the set's order) and, with the LLM on, each image's
    faithfulness (whether its description keeps everything the prompt asks for)."""
    from tqdm.auto import tqdm

    prompts, seeds = eval_set.image_prompts(), eval_set.image_seeds()
    options = {} if num_inference_steps is None else {"num_inference_steps": num_inference_steps}
    images, faithful = [], []
    for start in tqdm(range(0, len(prompts), batch_size), desc="llm on" if upsample else "llm off",
                      disable=not show_progress(progress), leave=False):
        rows = slice(start, start + batch_size)
        generators = [torch.Generator().manual_seed(s) for s in seeds[rows]]
        out = pipe(prompts[rows], generator=generators, upsample=upsample, output_type="np", **options)
        images.append((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
        faithful += out.faithful or []
    return np.concatenate(images), (faithful if upsample else None)


def evaluate_protocol(pipe: Any, split: str = "val", *, n_per_category: int | None = None,
                      num_inference_steps: int | None = None, prompt_trained: Any = None,
                      progress: bool = False) -> dict[str, Any]:
    """The pipeline on the ``split`` prompt set, LLM on and off: rates per category, paired verdicts, the planner.

    Returns plain values for JSON: ``llm_on`` and ``llm_off`` (each a
    :meth:`~llmimg.core.evaluation.protocol.ProtocolScore.as_dict`: ``overall`` and
    ``categories``, each with ``rate``, ``se``, ``n_images`` and ``n_prompts``), ``paired``
    (per category and ``overall``: LLM on minus off, its paired standard error, McNemar's
    counts and p, the verdict and a sentence; ``overall`` is GenEval's mean of six, see
    :func:`compare`), ``planner_faithful`` (per category and ``all`` prompts together, each
    with ``rate``, ``se`` and ``n``), the set's ``split`` and ``version``, ``seconds``, and
    ``per_image``: each setting's 0/1 results as a string, image by image in the set's
    order, so that a later run on the same set pairs with this one (:func:`score_from_record`).

    ``prompt_trained``, a pipeline whose generator was trained on prompts
    (:func:`prompt_trained_config`) on the same CLIP, adds the setting ``prompt_trained``
    (drawn from the prompt, same noise) and ``paired_prompt_trained``: LLM on minus it,
    per category and ``overall``, like ``paired``.
    """
    if world_of(pipe.tokenizer) != "geneval":
        raise ValueError("the protocol's prompts (counts, relations) are in the GenEval-shaped world's language: "
                         "evaluate a pipeline of that world (llmimg.pipelines.shapes.get(world='geneval'))")
    eval_set = subset(load_eval_set(split), n_per_category)
    t0 = time.perf_counter()
    settings = [(name, pipe, upsample) for name, upsample in SETTINGS.items()]
    if prompt_trained is not None:
        settings.append((PROMPT_TRAINED, prompt_trained, False))
    scores, faithful = {}, None
    for name, drawer, upsample in settings:
        images, kept = draw_eval_set(drawer, eval_set, upsample=upsample, num_inference_steps=num_inference_steps,
                                     progress=progress)
        scores[name] = judge_protocol(eval_set, images)
        faithful = kept if upsample else faithful
    paired = {f"paired{'' if other == 'llm_off' else '_' + other}": _paired(scores, other)
              for other in scores if other != "llm_on"}
    # One description per prompt and seed; the planner is judged per image drawn.
    kept = np.array(faithful, dtype=float)
    categories = np.array([item.category for item in eval_set.items for _ in item.seeds])
    planner = {c: rate_with_se(kept[categories == c])._asdict() for c in CATEGORIES if (categories == c).any()}
    planner["all"] = rate_with_se(kept)._asdict()  # every image's description, the cell's prompts included
    return {"protocol": scores["llm_on"].as_dict()["protocol"], "version": eval_set.version, "split": split,
            "n_prompts": len(eval_set), "images_per_prompt": eval_set.images_per_prompt,
            **{name: score.as_dict() for name, score in scores.items()}, **paired,
            "planner_faithful": planner, "seconds": time.perf_counter() - t0,
            "per_image": {name: "".join("01"[int(x)] for x in score.per_image()) for name, score in scores.items()}}


def sample_figure(settings: dict[str, tuple[Any, bool]], split: str = "val") -> Any:
    """A figure of the first prompt of each category, its four seeds drawn in each setting, each image judged.

    ``settings`` maps a column title to ``(pipeline, upsample)``; every setting draws the same
    noise. Each image is titled ✓ or ✗, the judge's verdict against the prompt as typed.
    Returns the matplotlib figure (not shown).
    """
    import matplotlib.pyplot as plt

    eval_set = subset(load_eval_set(split), 1)
    k = eval_set.images_per_prompt
    drawn = {}
    for title, (pipe, upsample) in settings.items():
        images, _ = draw_eval_set(pipe, eval_set, upsample=upsample)
        drawn[title] = (images, judge_protocol(eval_set, images).per_image())
    cols = k * len(settings)
    fig, axes = plt.subplots(len(eval_set), cols, figsize=(0.9 * cols + 2.4, 1.0 * len(eval_set) + 0.6),
                             squeeze=False)
    for g, (title, (images, right)) in enumerate(drawn.items()):
        axes[0, g * k].annotate(title, (0, 1.45), xycoords="axes fraction", fontsize=9, weight="bold")
        for row in range(len(eval_set)):
            for j in range(k):
                ax, n = axes[row, g * k + j], row * k + j
                ax.imshow(images[n], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title("✓" if right[n] else "✗", fontsize=8, color="green" if right[n] else "red", pad=2)
    for row, item in enumerate(eval_set.items):
        axes[row, 0].set_ylabel(f"{item.category}\n{item.prompt}", rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.27, right=0.99, top=0.9, bottom=0.02, wspace=0.08, hspace=0.45)
    return fig


def paired_rows(a: ProtocolScore, b: ProtocolScore, names: tuple[str, str],
                labels: tuple[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``a`` against ``b`` per category and ``overall``: the paired difference, its verdict and a sentence.

    ``names`` name the two settings in verdicts ("<name> ahead"), ``labels`` in the
    sentences (default: the names).
    """
    labels = labels or names
    rows = {}
    for category in ("overall", *CATEGORIES):
        d = compare(a, b, category)
        rows[category] = {**d.as_dict(), "verdict": d.verdict(*names), "sentence": d.sentence(*labels)}
    return rows


def _paired(scores: dict[str, ProtocolScore], other: str) -> dict[str, Any]:
    """LLM on against setting ``other``, per category and overall, with verdicts and sentences."""
    label = {"llm_off": "LLM off", PROMPT_TRAINED: "a generator trained on prompts"}[other]
    return paired_rows(scores["llm_on"], scores[other], ("llm_on", other), ("LLM on", label))


def compare(a: ProtocolScore, b: ProtocolScore, category: str = "overall") -> Any:
    """``a`` against ``b`` in ``category``, paired: ``"overall"`` is GenEval's mean of six
    (:func:`~llmimg.core.evaluation.protocol.compare_overall`), else one category's prompts."""
    return compare_overall(a, b) if category == "overall" else compare_settings(a, b, category)


def score_from_record(record: dict[str, Any], setting: str = "llm_on") -> ProtocolScore:
    """The :class:`~llmimg.core.evaluation.protocol.ProtocolScore` of a setting of an :func:`evaluate_protocol` record.

    The prompt set is the committed one of the record's split, cut to its number of
    prompts per category; scores of two records made on the same set pair up
    (:func:`~llmimg.core.evaluation.protocol.compare_settings`).
    """
    full = load_eval_set(record["split"])
    per_category = record["n_prompts"] // len(CATEGORIES)
    eval_set = subset(full, None if per_category * len(CATEGORIES) == len(full) else per_category)
    return score_protocol(eval_set, np.array([c == "1" for c in record["per_image"][setting]]))


__all__ = ["PROMPT_TRAINED", "SETTINGS", "as_pipelines", "compare", "draw_eval_set", "evaluate_protocol",
           "paired_rows", "prompt_trained_config", "sample_figure", "score_from_record", "stages", "subset"]
