"""Speed techniques for the pipeline, each measured side by side with its quality cost.

What notebook 08 and ``llmimg bench`` compare. A :class:`Technique` is a change to the
default fast setting (DPM-Solver++ at :data:`~llmimg.pipelines.shapes.DEFAULT_STEPS` guided
steps, the LLM sampling with its checker, fp32, SDPA attention): other call options
(a sampler and step count, greedy decoding, guidance on part of the steps, no LLM), a
*switch* applied around the calls, or another generator (a distilled student,
:mod:`llmimg.speed.distillation`). A switch changes only what the pipeline owns: a
component (the UNet's attention processor or memory layout, a compiled UNet, another
scheduler or generator, through ``register_modules``), the pipeline's
:attr:`~llmimg.pipelines.shapes.ShapesPipeline.sampling` options (guidance as two UNet
passes, DeepCache, text states cached per text), or the process (bf16 autocast, threads);
it never replaces a method of a component.

:func:`measure` draws the same prompts from the same seeds for every technique, in
batches, after one untimed warm-up batch, and scores the images with ShapesEval
against the prompts, so each row gives all-correct with its standard error and the
per-image scores that paired comparisons need. :func:`time_trials` times techniques in
interleaved rounds, and :func:`compare` puts the two together under the rules of
:mod:`llmimg.speed.verdicts`. :func:`sampler_curve` gives quality against step count for
every sampler, and :func:`kv_cache` times the LLM's greedy decoding with and without its
KV cache (checking that both write the same tokens).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch

from llmimg.core.config import show_progress
from llmimg.core.seeding import noise_generators
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS, ShapesPipeline
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage
from llmimg.speed.verdicts import (equal_quality, gain_beyond_noise, keeps_quality, paired_quality, quality_se,
                                   ratios, timing_noise)

Switch = Callable[[ShapesPipeline], ContextManager[Any]]


@dataclass(frozen=True)
class Technique:
    """One setting of the pipeline: call options, a switch around the calls, or both."""

    name: str
    what: str
    call: dict[str, Any] = field(default_factory=dict)
    switch: Switch | None = None
    exact: bool = False  # draws the very same images as the default (a switch of layout, kernels or scheduling)

    @property
    def options(self) -> dict[str, Any]:
        """The pipeline call's options: the default step count unless the technique sets its own, and its ``call``."""
        return {"num_inference_steps": DEFAULT_STEPS, **self.call}

    def applied(self, pipe: ShapesPipeline) -> ContextManager[Any]:
        """The switch around ``pipe``'s calls, or nothing for a technique of call options only."""
        return self.switch(pipe) if self.switch is not None else nullcontext()


# -- switches -------------------------------------------------------------------------
@contextmanager
def scheduler(pipe: ShapesPipeline, name: str) -> Iterator[None]:
    """The sampler ``name`` for the calls inside; the pipeline's own afterwards."""
    saved = pipe.scheduler
    pipe.use_scheduler(name)
    try:
        yield
    finally:
        pipe.scheduler = saved


@contextmanager
def swap_generator(pipe: ShapesPipeline, image_generator: gen_stage.ShapesGenerator, sampler: str) -> Iterator[None]:
    """Another image generator (e.g. a distilled student) with its sampler for the calls inside."""
    saved = pipe.unet, pipe.scheduler, pipe.config.stage_configs
    pipe.use_generator(image_generator, sampler)
    try:
        yield
    finally:
        pipe.register_to_config(stage_configs=saved[2])
        pipe.register_modules(unet=saved[0], scheduler=saved[1])


@contextmanager
def sampling(pipe: ShapesPipeline, **changes: Any) -> Iterator[None]:
    """The pipeline's sampling options with ``changes`` for the calls inside (see :class:`SamplingOptions`)."""
    saved = pipe.sampling
    pipe.sampling = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        pipe.sampling = saved


@contextmanager
def plain_attention(pipe: ShapesPipeline) -> Iterator[None]:
    """diffusers' ``AttnProcessor`` (softmax(QKᵀ)V written out) instead of PyTorch's fused SDPA."""
    from diffusers.models.attention_processor import AttnProcessor

    saved = pipe.unet.attn_processors
    pipe.unet.set_attn_processor(AttnProcessor())
    try:
        yield
    finally:
        pipe.unet.set_attn_processor(saved)


@contextmanager
def channels_last(pipe: ShapesPipeline) -> Iterator[None]:
    """The UNet's weights in ``channels_last`` memory format (NHWC), which some convolution kernels prefer."""
    pipe.unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        pipe.unet.to(memory_format=torch.contiguous_format)


@contextmanager
def bf16(pipe: ShapesPipeline) -> Iterator[None]:
    """bf16 autocast on the pipeline's device (matrix products in bfloat16, sums kept in float32)."""
    with torch.autocast(pipe.device.type, dtype=torch.bfloat16):
        yield


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch's CPU kernels on ``n`` threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextmanager
def compiled(pipe: ShapesPipeline, backend: str = "inductor") -> Iterator[None]:
    """The UNet through ``torch.compile`` (Inductor; the first call of each shape compiles), as a component.

    ``backend`` is ``torch.compile``'s (``"eager"`` traces without generating code: the
    tests check the switch that way, in seconds instead of Inductor's minute on a CPU).
    Dynamo's notes on graph breaks and on diffusers' cached version checks are kept out
    of the output.
    """
    quiet = [logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in quiet]
    unet = pipe.unet
    pipe.register_modules(unet=torch.compile(unet, backend=backend))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torch\._dynamo")
            for logger in quiet:
                logger.setLevel(logging.ERROR)
            yield
    finally:
        pipe.register_modules(unet=unet)
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def cached_text_states(pipe: ShapesPipeline) -> ContextManager[None]:
    """Text states kept per text: the unconditional ``""`` (encoded twice a call otherwise) and every
    description seen before are encoded once. Exact: states are padded to one fixed length."""
    return sampling(pipe, text_state_cache={})


def two_pass_guidance(pipe: ShapesPipeline) -> ContextManager[None]:
    """Classifier-free guidance as two UNet calls (unconditional, then conditional) instead of one batched call."""
    return sampling(pipe, batched_guidance=False)


def deep_cache(pipe: ShapesPipeline, interval: int = 2) -> ContextManager[None]:
    """DeepCache (Ma et al., 2024): the UNet's deep features reused for ``interval - 1`` steps out of every
    ``interval`` (:class:`~llmimg.stages.generator.DeepCache`)."""
    return sampling(pipe, deep_cache_interval=interval)


# -- measuring ------------------------------------------------------------------------
def measure(pipe: ShapesPipeline, technique: Technique, prompts: Sequence[str], *, batch_size: int = 32,
            seed: int = 0, warm_up: bool = True) -> dict[str, Any]:
    """Milliseconds per image and ShapesEval all-correct (with its standard error) of ``technique`` on ``prompts``.

    Image ``k`` always draws its noise from ``(seed, "noise", k)``, whatever its batch. With ``warm_up``, one untimed
    batch (the first) runs before the timed pass, so lazy set-up and compilation are not
    counted; leave it off for settings too slow to draw twice (the naive baseline).
    """
    from llmimg.core.evaluation import shapes_eval, standard_error

    prompts = list(prompts)
    if not prompts:
        raise ValueError("measure needs at least one prompt")
    call = technique.options
    with technique.applied(pipe):
        t0 = time.perf_counter()
        if warm_up:
            first = prompts[:batch_size]
            pipe(first, generator=noise_generators(seed, len(first)), output_type="pt", **call)
        warm_up_s = time.perf_counter() - t0
        images, seconds = [], 0.0
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            t0 = time.perf_counter()
            out = pipe(batch, generator=noise_generators(seed, len(batch), start), output_type="pt", **call)
            seconds += time.perf_counter() - t0
            images.append(out.images)
    scores = shapes_eval(torch.cat(images), prompts)
    rate = scores.all_correct
    return {"name": technique.name, "what": technique.what, "ms_per_image": 1e3 * seconds / len(prompts),
            "all_correct": rate, "all_correct_se": standard_error(rate, len(prompts)), "n": len(prompts),
            "correct": [bool(r.all_correct) for r in scores.records], "warm_up_s": warm_up_s}


def time_trials(pipe: ShapesPipeline, techniques: Sequence[Technique], prompts: Sequence[str], *, trials: int = 5,
                seed: int = 0) -> dict[str, list[float]]:
    """Milliseconds per image of each technique on the batch ``prompts``, in ``trials`` interleaved rounds.

    Round after round every technique draws the batch once, so a slow moment of a shared
    machine falls on all of them alike; an untimed round first pays for lazy set-up and
    compilation. Entering and leaving a switch is not timed.
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    prompts = list(prompts)
    ms: dict[str, list[float]] = {t.name: [] for t in techniques}
    for round_ in range(trials + 1):
        for technique in techniques:
            with technique.applied(pipe):
                t0 = time.perf_counter()
                pipe(prompts, generator=noise_generators(seed, len(prompts)), output_type="pt", **technique.options)
                seconds = time.perf_counter() - t0
            if round_:
                ms[technique.name].append(1e3 * seconds / len(prompts))
    return ms


def default_techniques(distilled: dict[int, gen_stage.ShapesGenerator] | None = None,
                       compile_unet: bool = True) -> list[Technique]:
    """The techniques notebook 08 and ``llmimg bench`` compare, the default setting first.

    ``distilled`` maps step counts to distilled students (:func:`llmimg.speed.distillation.get`).
    """
    rows = [
        Technique("default", f"{DEFAULT_SCHEDULER} {DEFAULT_STEPS} steps, guided, LLM samples with its checker"),
        Technique("ddim_4", "DDIM at 4 steps", {"num_inference_steps": 4},
                  lambda p: scheduler(p, "ddim")),
        Technique("dpm++_4", "DPM-Solver++ at 4 steps", {"num_inference_steps": 4}),
        Technique("guidance_half", "guidance on the first half of the steps only", {"guidance_end": 0.5}),
        Technique("no_guidance", "no classifier-free guidance (one UNet row per image)", {"guidance_scale": 1.0}),
        Technique("cfg_two_passes", "guidance as two UNet calls instead of one batched call",
                  switch=two_pass_guidance, exact=True),
        Technique("cached_text_states", "text states kept per text (the unconditional one encoded once)",
                  switch=cached_text_states, exact=True),
        Technique("greedy_llm", "the LLM writes greedily (no sampling, no redraws)", {"do_sample": False}),
        Technique("constrained_llm", "the LLM samples through the grammar's automaton, forced runs in one pass",
                  {"constrained": True}),
        Technique("no_llm", "no LLM: the prompt is drawn as typed", {"upsample": False}),
        Technique("plain_attention", "attention written out instead of PyTorch's SDPA", switch=plain_attention,
                  exact=True),
        Technique("channels_last", "UNet weights and activations in NHWC layout", switch=channels_last, exact=True),
        Technique("bf16", "bf16 autocast", switch=bf16),
        Technique("one_thread", "one CPU thread instead of all", switch=lambda p: threads(1), exact=True),
        Technique("deep_cache", "DeepCache: the deep UNet features reused on every other step", switch=deep_cache),
    ]
    if compile_unet:
        rows.append(Technique("compile", "torch.compile of the UNet (Inductor)", switch=compiled))
    for steps, student in sorted((distilled or {}).items()):
        rows.append(Technique(f"distilled_{steps}", f"progressive distillation to {steps} step(s), guidance baked in",
                              {"num_inference_steps": steps},
                              lambda p, g=student: swap_generator(p, g, "ddim")))
        rows.append(Technique(f"distilled_{steps}_greedy", f"distilled to {steps} step(s), LLM greedy",
                              {"num_inference_steps": steps, "do_sample": False},
                              lambda p, g=student: swap_generator(p, g, "ddim")))
        rows.append(Technique(f"distilled_{steps}_constrained", f"distilled to {steps} step(s), LLM constrained",
                              {"num_inference_steps": steps, "constrained": True},
                              lambda p, g=student: swap_generator(p, g, "ddim")))
    return rows


def combine(name: str, parts: Sequence[Technique]) -> Technique:
    """One technique doing all of ``parts``: their call options merged, their switches nested in order."""
    call: dict[str, Any] = {}
    for part in parts:
        call.update(part.call)
    switches = [part.switch for part in parts if part.switch is not None]

    @contextmanager
    def all_switches(pipe: ShapesPipeline) -> Iterator[None]:
        with ExitStack() as stack:
            for switch in switches:
                stack.enter_context(switch(pipe))
            yield

    return Technique(name, " + ".join(part.name for part in parts), call, all_switches if switches else None)


# Call options that change only how the LLM writes: they combine with any generator and step count.
WRITER_OPTIONS = frozenset({"do_sample", "constrained"})


def compare(pipe: ShapesPipeline, techniques: Sequence[Technique], prompts: Sequence[str],
            reference: dict[str, Any], *, seed: int = 0, trials: int = 5, timing_prompts: Sequence[str] | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Measure every technique on ``prompts``, stack the ones that help, and pick the fastest at equal quality.

    ``techniques[0]`` is the default setting that speed-ups are quoted against.
    ``reference`` (a :func:`measure` row, e.g. the naive baseline's, drawn on the first
    prompts of ``prompts``) is the quality a setting must keep, by the paired rule
    (:func:`~llmimg.speed.verdicts.paired_quality`). Quality comes from one pass over
    ``prompts``; speed from ``trials`` interleaved timings of the batch ``timing_prompts``
    (the first 32 prompts by default, :func:`time_trials`): each row's ``ms_per_image`` is
    the median, with ``ms_min`` and ``ms_max``, and ``speedup`` the median ratio to the
    default, trial by trial (for a stack, timed in other rounds, the ratio of the medians).
    ``noise`` is the run's timing noise, measured by the exact
    switches (:func:`~llmimg.speed.verdicts.timing_noise`).

    The stack starts from the fastest setting that keeps the reference's quality and
    tries each switch or writer option (:data:`WRITER_OPTIONS`) that kept the default's
    quality, the ones that sped the default up most first (a gain on the default is a
    poor guide once the generator takes one step: the LLM's share of the time grows);
    one stays only if the stack with it, timed against the stack without it in the same
    interleaved trials, is faster by more than the noise and still keeps the quality
    (speed-ups need not multiply). Returns ``rows`` (one per technique, then the stack if
    something stayed), ``stack_trials`` (every stack tried, with its ``gain`` and
    ``kept``), ``fastest`` (a row), ``techniques`` (every row's and trial's
    :class:`Technique` by name; the fastest's also under ``fastest_technique``),
    ``noise``, and ``meets_reference``: False when no setting, not even the default, kept
    the reference's quality; ``fastest`` and the stack are then held to the default's.
    Every row and trial says whether it keeps that quality in ``keeps_target``.
    """
    from tqdm.auto import tqdm

    prompts = list(prompts)
    timing_prompts = list(timing_prompts or prompts[:32])
    by_name = {t.name: t for t in techniques}
    shown = tqdm(techniques, desc="techniques", disable=not show_progress(progress))
    rows = [measure(pipe, t, prompts, seed=seed) for t in shown]
    ms = time_trials(pipe, techniques, timing_prompts, trials=trials, seed=seed)
    default = rows[0]
    for row in rows:
        timed(row, ms[row["name"]], ms[default["name"]])
        row.update(paired_quality(row, reference))
    noise = timing_noise(ms, default["name"], [t.name for t in techniques if t.exact])
    meets_reference = any(r["keeps_quality"] for r in rows)
    target = reference if meets_reference else default  # else settle for the default's quality, and say so
    for row in rows:
        row["keeps_target"] = keeps_quality(row, target)
    best = min((r for r in rows if r["keeps_target"]), key=lambda r: r["ms_per_image"])

    def stackable(t: Technique) -> bool:
        return (t.switch is not None and not t.call) or (bool(t.call) and t.switch is None
                                                          and set(t.call) <= WRITER_OPTIONS)
    helpers = sorted((r for r in rows[1:] if stackable(by_name[r["name"]]) and keeps_quality(r, default)),
                     key=lambda r: r["ms_per_image"])
    stack, stack_row, trials_out = [by_name[best["name"]]], best, []
    for helper in helpers:
        part = by_name[helper["name"]]
        if set(part.call) & set(combine("", stack).call):
            continue  # the stack already sets this option (e.g. a greedy student and the greedy writer)
        current, trial = combine("stack", stack), combine("stack", [*stack, part])
        row = measure(pipe, trial, prompts, seed=seed)
        pair = time_trials(pipe, [current, dataclasses.replace(trial, name="trial")], timing_prompts,
                           trials=trials, seed=seed)
        timed(row, pair["trial"], pair["stack"])
        row["speedup"] = default["ms_per_image"] / row["ms_per_image"]  # against the default, as every row's
        row.update(paired_quality(row, reference))
        row["gain"], faster = gain_beyond_noise(pair["stack"], pair["trial"], noise)
        row["keeps_target"] = keeps_quality(row, target)
        row["kept"] = faster and row["keeps_target"]
        row["name"] = f"stack_trial_{len(trials_out) + 1}"
        by_name[row["name"]] = trial
        trials_out.append(row)
        if row["kept"]:
            stack, stack_row = [*stack, part], row
    if len(stack) > 1:
        rows.append({**{k: v for k, v in stack_row.items() if k not in ("kept", "gain")}, "name": "stack"})
        by_name["stack"] = combine("stack", stack)
        best = rows[-1]
    return {"rows": rows, "stack_trials": trials_out, "fastest": best, "fastest_technique": by_name[best["name"]],
            "techniques": by_name, "meets_reference": meets_reference, "noise": noise, "trials": trials}


def fastest_for_one(pipe: ShapesPipeline, compared: dict[str, Any], prompt: str, *, repeats: int = 5,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Prompt-to-image latency at batch 1 of every setting :func:`compare` found of equal quality, fastest first.

    The fastest setting of :func:`compare` is the fastest for a batch of 32; one user
    waiting for one image can be served faster by another (the LLM's share of a call is
    larger at batch 1, and its ways of writing differ most there). Each row: ``name``,
    ``what``, ``all_correct``, the median ``stage_latency_ms`` of each stage (after one
    warm-up call) and ``end_to_end_ms``.
    """
    from llmimg.speed.profiling import stage_latency

    # The stack is also the last stack trial it kept: one setting, timed once (under the name "stack").
    candidates = {}
    for row in [*compared["rows"], *compared["stack_trials"]]:
        if row["keeps_target"]:
            candidates.setdefault(row["what"], row)
    out = []
    for row in candidates.values():
        technique = compared["techniques"][row["name"]]
        with technique.applied(pipe):
            latency = stage_latency(pipe, [prompt], repeats=repeats, seed=seed, **technique.options)
        out.append({"name": row["name"], "what": row["what"], "all_correct": row["all_correct"],
                    "stage_latency_ms": latency, "end_to_end_ms": latency["total"]})
    return sorted(out, key=lambda r: r["end_to_end_ms"])


def timed(row: dict[str, Any], ms: Sequence[float], reference_ms: Sequence[float]) -> None:
    """Put ``ms`` (one per trial) into ``row``: the median ``ms_per_image``, ``ms_min``, ``ms_max``, ``ms_trials``,
    and ``speedup`` as the median ratio to ``reference_ms`` trial by trial."""
    row.update(ms_per_image=statistics.median(ms), ms_min=min(ms), ms_max=max(ms), ms_trials=list(ms),
               speedup=statistics.median(ratios(reference_ms, ms)))


def sampler_curve(pipe: ShapesPipeline, prompts: Sequence[str], *,
                  schedulers: Sequence[str] = tuple(gen_stage.SCHEDULERS),
                  steps: Sequence[int] = (1, 2, 4, 10, 25), seed: int = 0, batch_size: int = 32,
                  distilled: dict[int, gen_stage.ShapesGenerator] | None = None) -> list[dict[str, Any]]:
    """ShapesEval all-correct and denoising milliseconds per image for each sampler and step count.

    The LLM writes the descriptions once (from ``seed``); every point draws those
    descriptions from the same noise, so points differ only in the sampler. Distilled
    students (``{steps: generator}``) add their own points with the DDIM sampler.
    """
    from llmimg.core.evaluation import shapes_eval, standard_error

    prompts = list(prompts)
    descriptions = [d or p for d, p in zip(pipe.writer.upsample(prompts, seed=seed), prompts)]
    teacher = pipe.image_generator
    points = [(name, n, teacher) for name in schedulers for n in steps]
    points += [("distilled", n, student) for n, student in sorted((distilled or {}).items())]
    rows = []
    for name, n, gen in points:
        sampler = "ddim" if name == "distilled" else name
        gen.generate(descriptions[:2], num_inference_steps=n, scheduler=sampler, seed=seed, check=False)  # warm-up
        t0 = time.perf_counter()
        images = gen.generate(descriptions, num_inference_steps=n, scheduler=sampler, seed=seed,
                              batch_size=batch_size, check=False)
        seconds = time.perf_counter() - t0
        rate = shapes_eval(images, prompts).all_correct
        guided = gen.config.guidance_scale > 1
        rows.append({"scheduler": name, "steps": n, "unet_rows_per_image": n * (2 if guided else 1),
                     "all_correct": rate, "all_correct_se": standard_error(rate, len(prompts)),
                     "ms_per_image": 1e3 * seconds / len(prompts), "n": len(prompts)})
    return rows


def kv_cache(pipe: ShapesPipeline, prompts: Sequence[str], *, n_new: int = 24, repeats: int = 3) -> dict[str, Any]:
    """Greedy decoding of ``n_new`` tokens for ``prompts`` with and without the LLM's KV cache (median ms of each).

    ``same_tokens`` checks that the two paths write identical tokens; ``positions_fed``
    counts the positions GPT-2 processes in all, which shows that "off" recomputes.
    """
    writer = pipe.writer
    prompts = list(prompts)
    z = writer.clip.encode_text(prompts)
    tasks = llm_stage.task_ids("upsample", len(prompts), writer.device)
    context = writer.context(prompts=prompts)
    fed: list[int] = []
    hook = writer.lm.gpt2.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    out: dict[str, Any] = {"n": len(prompts), "new_tokens": n_new}
    tokens = {}
    try:
        for use_cache in (True, False):
            fed.clear()
            tokens[use_cache] = llm_stage.greedy_decode(writer.lm, z, tasks, context, n_new, use_cache)
            out[f"positions_fed_{'with' if use_cache else 'without'}"] = sum(fed)
    finally:
        hook.remove()
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):  # alternate, so a busy moment of the machine hits both
        for use_cache in (True, False):
            t0 = time.perf_counter()
            llm_stage.greedy_decode(writer.lm, z, tasks, context, n_new, use_cache)
            times[use_cache].append(time.perf_counter() - t0)
    with_ms, without_ms = (1e3 * statistics.median(times[k]) for k in (True, False))
    return {**out, "same_tokens": bool(torch.equal(tokens[True], tokens[False])), "ms_with": with_ms,
            "ms_without": without_ms, "speedup": without_ms / with_ms}


__all__ = ["WRITER_OPTIONS", "Technique", "bf16", "cached_text_states", "channels_last", "combine", "compare",
           "compiled", "deep_cache", "default_techniques", "equal_quality", "fastest_for_one", "keeps_quality",
           "kv_cache", "measure",
           "paired_quality", "plain_attention", "quality_se", "sampler_curve", "sampling", "scheduler",
           "swap_generator", "threads", "time_trials", "timed", "two_pass_guidance"]
