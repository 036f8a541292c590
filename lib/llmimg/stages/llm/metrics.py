"""What a trained LLM does: the upsampler's validity, faithfulness and open-attribute distribution, and captions."""

from __future__ import annotations

import itertools
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np

from llmimg.core import seeding
from llmimg.core.data import (ParseError, ShapesWorld, complete_prompt, parse_description, parse_prompt,
                              prompt_matches)
from llmimg.core.evaluation import standard_error
from llmimg.core.text import world_of
from llmimg.stages.llm.config import MAX_TRIES
from llmimg.stages.llm.writer import ShapesLLM, prompt_seeds

# The rates of `evaluate` that notebook 04 records and the reference check compares.
HEADLINE = ("valid_rate", "faithfulness_one_object", "faithfulness_two_objects", "caption_accuracy",
            "heldout_caption_accuracy")
OPEN_ATTRIBUTES = ("colour", "size", "position")


def open_attributes(prompt: str, scene: Any) -> list[tuple[str, str]]:
    """(attribute, value) of every attribute ``scene`` fills in that ``prompt`` leaves open.

    Prompt objects are paired with the scene's objects by the first assignment that
    keeps every stated attribute; an unfaithful scene gives nothing.
    """
    partials = parse_prompt(prompt)
    if len(partials) != len(scene):
        return []
    for perm in itertools.permutations(scene.objects):
        if all(p.matches(o) for p, o in zip(partials, perm)):
            return [(a, getattr(o, a)) for p, o in zip(partials, perm) for a in OPEN_ATTRIBUTES
                    if getattr(p, a) is None]
    return []


def total_variation(a: Counter, b: Counter) -> float:
    """Total-variation distance between two empirical distributions given as counts."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return float("nan")
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


N_BOOTSTRAP = 400  # resamples of the prompts behind a TV distance's standard error


def _open_counts(prompts: list[str], outputs: list[str], seed: int) -> dict[str, Any]:
    """Per prompt: whether its description parses and keeps it, and the open attributes it and two oracle runs fill.

    The oracle's draws depend only on ``prompts`` and ``seed``, so two sets of ``outputs``
    for the same prompts are compared with the same oracle runs.
    """
    rng = seeding.numpy_rng(seed, "eval")
    valid, kept, objects, model, oracle, oracle2 = [], [], [], [], [], []
    for prompt, text in zip(prompts, outputs):
        objects.append(len(parse_prompt(prompt)))
        oracle.append(Counter(open_attributes(prompt, complete_prompt(prompt, rng))))
        oracle2.append(Counter(open_attributes(prompt, complete_prompt(prompt, rng))))
        try:
            scene = parse_description(text)
        except ParseError:
            scene = None
        valid.append(scene is not None)
        kept.append(scene is not None and prompt_matches(prompt, scene))
        model.append(Counter(open_attributes(prompt, scene)) if kept[-1] else Counter())
    return {"valid": valid, "kept": kept, "objects": objects, "model": model, "oracle": oracle, "oracle2": oracle2}


def _tv_by_attribute(a_rows: list[Counter], b_rows: list[Counter], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per open attribute, the TV distance between the pooled per-prompt counts ``a_rows`` and ``b_rows`` with the
    prompts weighted by each row of ``weights`` (shape (draws, prompts)): one distance per row, NaN where a side
    filled the attribute in nowhere (as :func:`total_variation`)."""
    tv = {}
    for attribute in OPEN_ATTRIBUTES:
        keys = sorted({k for row in (*a_rows, *b_rows) for k in row if k[0] == attribute})
        a, b = (np.array([[row[k] for k in keys] for row in rows], dtype=float).reshape(len(rows), len(keys))
                for rows in (a_rows, b_rows))
        ca, cb = weights @ a, weights @ b  # (draws, values): the pooled counts
        na, nb = ca.sum(1, keepdims=True), cb.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            tv[attribute] = np.where((na[:, 0] > 0) & (nb[:, 0] > 0), 0.5 * np.abs(ca / na - cb / nb).sum(1), np.nan)
    return tv


def _mean_tv(tv: dict[str, np.ndarray]) -> np.ndarray:
    """The open-attribute TV of each draw: the mean over the attributes that are not NaN (NaN if none is)."""
    with warnings.catch_warnings():  # a draw where no attribute was filled in stays NaN, as _mean gives
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(list(tv.values())), axis=0)


def _spread(draws: np.ndarray) -> float:
    """The standard deviation of the finite bootstrap draws (NaN with fewer than two: nothing was filled in)."""
    finite = draws[np.isfinite(draws)]
    return float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")


def _weights(n: int, seed: int, draws: int = N_BOOTSTRAP) -> np.ndarray:
    """The prompts' weights: row 0 the sample itself (all ones), then ``draws`` resamples of the ``n`` prompts with
    replacement, as multiplicities (shape (draws + 1, n))."""
    rng = seeding.numpy_rng(seed, "bootstrap")
    return np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=draws).astype(float)])


def upsampling_scores(prompts: list[str], outputs: list[str], seed: int = 0) -> dict[str, Any]:
    """Validity, faithfulness and open-attribute distribution match of descriptions written for ``prompts``.

    The distribution is compared with the oracle upsampler (:func:`~llmimg.core.data.complete_prompt`)
    on the same prompts, by the total-variation distance per open attribute;
    ``open_attribute_tv_floor`` is the distance between two oracle runs of the same
    size, the part of the number that is sampling noise. ``open_attribute_tv_se`` is
    the distance's standard error, by the bootstrap over prompts (a TV distance is not
    a mean, so it has no binomial formula).
    """
    c = _open_counts(prompts, outputs, seed)
    by_count: dict[str, list[bool]] = {}
    for k, kept in zip(c["objects"], c["kept"]):
        by_count.setdefault(str(k), []).append(kept)
    weights = _weights(len(prompts), seed)
    tv = _tv_by_attribute(c["model"], c["oracle"], weights)
    floor = _tv_by_attribute(c["oracle2"], c["oracle"], weights[:1])
    n = len(prompts)
    return {"valid_rate": sum(c["valid"]) / n, "faithfulness": sum(c["kept"]) / n,
            "faithfulness_by_objects": {k: float(np.mean(v)) for k, v in sorted(by_count.items())},
            "open_attribute_tv": _mean({a: v[0] for a, v in tv.items()}.values()),
            "open_attribute_tv_se": _spread(_mean_tv(tv)[1:]),
            "open_attribute_tv_floor": _mean(v[0] for v in floor.values()),
            "open_attribute_tv_per_attribute": {a: float(v[0]) for a, v in tv.items()}}


def tv_difference(prompts: list[str], outputs_a: list[str], outputs_b: list[str], seed: int = 0) -> dict[str, float]:
    """Open-attribute TV of ``outputs_a`` minus that of ``outputs_b``, both written for the same ``prompts``.

    Both are measured against the same oracle runs, and the standard error of the
    difference comes from resampling the prompts together (a paired bootstrap): the
    course's rule reads a difference below two of them as noise. Returns ``tv_a``,
    ``tv_b``, ``diff`` and ``se``.
    """
    if len(outputs_a) != len(prompts) or len(outputs_b) != len(prompts):
        raise ValueError(f"one description per prompt in both settings: {len(prompts)} prompts, "
                         f"{len(outputs_a)} and {len(outputs_b)} descriptions")
    a, b = _open_counts(prompts, outputs_a, seed), _open_counts(prompts, outputs_b, seed)
    weights = _weights(len(prompts), seed)
    tv_a, tv_b = (_mean_tv(_tv_by_attribute(c["model"], a["oracle"], weights)) for c in (a, b))
    diff = tv_a - tv_b
    return {"tv_a": float(tv_a[0]), "tv_b": float(tv_b[0]), "diff": float(diff[0]), "se": _spread(diff[1:])}


def planner_open_attributes(prompt: str, layout: str | Any) -> list[tuple[str, str]]:
    """(attribute, value) of every attribute a GenEval-world ``layout`` fills in that ``prompt`` leaves open.

    ``layout``: a description or a :class:`~llmimg.core.data.Scene`. Its objects are read in the
    prompt's order (:func:`~llmimg.core.data.geneval.in_prompt_order`); a cell counts as open
    wherever the prompt states none, relations included (the oracle draws it among the cells
    they allow). A layout that does not follow the prompt gives nothing.
    """
    from llmimg.core.data.geneval import in_prompt_order, parse_geneval_prompt

    try:
        p = parse_geneval_prompt(prompt)
        objects = in_prompt_order(p, parse_description(layout) if isinstance(layout, str) else layout)
    except ParseError:
        return []
    groups = [p.groups[g] for g in p.slots]
    return [(a, getattr(o, a)) for g, o in zip(groups, objects) for a in OPEN_ATTRIBUTES if getattr(g, a) is None]


def planner_tv(prompts: list[str], outputs: list[str], seed: int = 0) -> dict[str, float]:
    """How far the planner's layouts for ``prompts`` are from the oracle planner's, in their open attributes.

    Per open attribute (colour, size, cell) the TV distance between the values the
    planner's faithful ``outputs`` fill in and those of the oracle
    (:func:`~llmimg.core.data.geneval.plan_layout`) on the same prompts, averaged over the
    attributes: ``open_attribute_tv``. ``floor`` is the distance between two oracle runs,
    what sampling alone gives; ``diff`` is the planner's distance minus the floor. The
    three standard errors (``*_se``) come from one bootstrap over the prompts, so ``diff``'s
    is paired.
    """
    from llmimg.core.data.geneval import plan_layout

    if len(outputs) != len(prompts):
        raise ValueError(f"one description per prompt: {len(prompts)} prompts, {len(outputs)} descriptions")
    rng = seeding.numpy_rng(seed, "eval")
    model = [Counter(planner_open_attributes(p, t)) for p, t in zip(prompts, outputs)]
    oracle, oracle2 = ([Counter(planner_open_attributes(p, plan_layout(p, rng))) for p in prompts] for _ in range(2))
    weights = _weights(len(prompts), seed)
    tv, floor = (_mean_tv(_tv_by_attribute(rows, oracle, weights)) for rows in (model, oracle2))
    return {"open_attribute_tv": float(tv[0]), "open_attribute_tv_se": _spread(tv[1:]), "floor": float(floor[0]),
            "floor_se": _spread(floor[1:]), "diff": float(tv[0] - floor[0]), "diff_se": _spread(tv[1:] - floor[1:]),
            "n": len(prompts)}


def _mean(values: Any) -> float:
    """Mean of the numbers that are not NaN; NaN if there are none (no open attribute was ever filled in)."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def caption_scores(scenes: list[Any], outputs: list[str]) -> dict[str, float]:
    """Share of captions that parse, and that describe their image exactly (every attribute right)."""
    valid = exact = 0
    for scene, text in zip(scenes, outputs):
        try:
            written = parse_description(text)
        except ParseError:
            continue
        valid += 1
        exact += written == scene
    return {"caption_valid_rate": valid / len(scenes), "caption_accuracy": exact / len(scenes)}


def evaluate_planner(llm: ShapesLLM, n: int = 500, seed: int = 0, batch_size: int = 250) -> dict[str, Any]:
    """The LLM metrics of the GenEval-shaped world: the layout planner's faithfulness per category, and captions.

    ``n`` prompts of the ``val`` split and ``n`` of the ``heldout`` split (compositions no
    stage saw in training) are upsampled with the checker (``planner_faithful*``) and
    without it, the model's first draws (``model_planner_faithful*``); a description is
    faithful when the planner's checker finds nothing wrong: every object, the count, the
    stated attributes and cells, every relation. Per category: ``<key>_<category>``. Greedy
    captions of the ``val`` scenes give ``caption_accuracy``. Every rate has its standard
    error (``<key>_se``) and its number of prompts (``n_<category>``).
    """
    from llmimg.core.data.geneval import CATEGORIES
    from llmimg.core.data.worlds import prompt_followed, world_samples

    t0 = time.perf_counter()
    out: dict[str, Any] = {"world": "geneval"}

    def put(key: str, kept: np.ndarray) -> None:
        out[key], out[f"{key}_se"] = float(kept.mean()), standard_error(float(kept.mean()), len(kept))

    for split, prefix in (("val", ""), ("heldout", "heldout_")):
        samples = world_samples("geneval", n, split, seed=seed)
        prompts, seeds = [s.prompt for s in samples], prompt_seeds(seed, n)
        categories = np.array([s.category for s in samples])
        for key, tries in (("planner_faithful", MAX_TRIES), ("model_planner_faithful", 1)):
            written = [d for start in range(0, n, batch_size)
                       for d in llm.upsample(prompts[start:start + batch_size], seed=seeds[start:start + batch_size],
                                             max_tries=tries)]
            kept = np.array([prompt_followed("geneval", p, d) for p, d in zip(prompts, written)], dtype=float)
            put(f"{prefix}{key}", kept)
            for category in CATEGORIES:
                if (categories == category).any():
                    put(f"{prefix}{key}_{category}", kept[categories == category])
                    out[f"n_{prefix}{category}"] = int((categories == category).sum())
        if split == "val":
            written = [c for start in range(0, n, batch_size)
                       for c in llm.caption(np.stack([s.image for s in samples[start:start + batch_size]]))]
            for key, rate in caption_scores([s.scene for s in samples], written).items():
                out[key], out[f"{key}_se"] = rate, standard_error(rate, n)
    return {**out, "n": n, "seconds": time.perf_counter() - t0}


def evaluate(llm: ShapesLLM, n: int = 500, split: str = "val", seed: int = 0,
             batch_size: int = 250) -> dict[str, Any]:
    """The LLM metrics of ``llmimg eval llm`` on ``n`` held-out scenes: upsampling (sampled) and captioning (greedy).

    An LLM of the GenEval-shaped world is scored by :func:`evaluate_planner` instead.

    Upsampling is scored as the upsampler works, with its checker (redraws of
    descriptions that contradict the prompt, :meth:`ShapesLLM.upsample_from`), and, under
    ``model_*`` keys, on the model's first draws alone. Faithfulness is also split by
    the prompt's number of objects (``*_one_object``, ``*_two_objects``);
    ``upsample_draws`` is the mean number of draws per prompt. Captioning is measured
    again on ``n`` scenes of the compositional ``heldout`` split
    (``heldout_caption_accuracy``). Every rate has its standard error (``<key>_se``).
    """
    if world_of(llm.tokenizer) == "geneval":
        return evaluate_planner(llm, n, seed, batch_size)

    def captions(samples: list[Any]) -> list[str]:
        return [c for start in range(0, len(samples), batch_size)
                for c in llm.caption(np.stack([s.image for s in samples[start:start + batch_size]]))]

    def upsample(max_tries: int) -> tuple[list[str], list[int]]:
        parts = [llm.upsample(prompts[start:start + batch_size], seed=seeds[start:start + batch_size],
                              max_tries=max_tries, return_draws=True) for start in range(0, n, batch_size)]
        return [d for texts, _ in parts for d in texts], [k for _, draws in parts for k in draws]

    samples = list(ShapesWorld(seed=seed).samples(n, split))
    heldout = list(ShapesWorld(seed=seed).samples(n, "heldout"))
    prompts = [s.prompt for s in samples]
    seeds = prompt_seeds(seed, n)  # prompt k samples from its own stream, whatever its batch
    t0 = time.perf_counter()
    (checked, draws), (first, _) = upsample(MAX_TRIES), upsample(1)  # same seeds: the checker's first draws
    written, written_heldout = captions(samples), captions(heldout)
    seconds = time.perf_counter() - t0
    by_objects = Counter(len(s.scene) for s in samples)
    counts = {"one_object": by_objects[1], "two_objects": by_objects[2]}
    rates: dict[str, float] = {}
    for prefix, outputs in (("", checked), ("model_", first)):
        scores = upsampling_scores(prompts, outputs, seed=seed)
        rates[f"{prefix}valid_rate"], rates[f"{prefix}faithfulness"] = scores["valid_rate"], scores["faithfulness"]
        for key, count in (("one_object", "1"), ("two_objects", "2")):
            rates[f"{prefix}faithfulness_{key}"] = scores["faithfulness_by_objects"].get(count, float("nan"))
        if not prefix:
            tv = {k: scores[k] for k in ("open_attribute_tv", "open_attribute_tv_se", "open_attribute_tv_floor",
                                         "open_attribute_tv_per_attribute")}
    rates.update(caption_scores([s.scene for s in samples], written))
    rates["heldout_caption_accuracy"] = caption_scores([s.scene for s in heldout], written_heldout)["caption_accuracy"]

    def n_of(key: str) -> int:
        return next((c for k, c in counts.items() if key.endswith(k)), n)

    errors = {f"{k}_se": standard_error(v, n_of(k)) if n_of(k) and not np.isnan(v) else float("nan")
              for k, v in rates.items()}
    return {**rates, **errors, **tv, "upsample_draws": float(np.mean(draws)), "n_one_object": by_objects[1],
            "n_two_objects": by_objects[2], "n": n, "seconds": seconds}


__all__ = ["HEADLINE", "OPEN_ATTRIBUTES", "caption_scores", "evaluate", "evaluate_planner", "open_attributes",
           "planner_open_attributes", "planner_tv", "total_variation", "tv_difference", "upsampling_scores"]
