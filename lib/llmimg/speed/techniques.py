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
against the prompts, so each row gives milliseconds per image and all-correct with its
standard error. :func:`sampler_curve` gives quality against step count for every
sampler, and :func:`kv_cache` times the LLM's greedy decoding with and without its KV
cache (checking that both write the same tokens).
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

Switch = Callable[[ShapesPipeline], ContextManager[Any]]


@dataclass(frozen=True)
class Technique:
    """One setting of the pipeline: call options, a switch around the calls, or both."""

    name: str
    what: str
    call: dict[str, Any] = field(default_factory=dict)
    switch: Switch | None = None

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
    call = {"num_inference_steps": DEFAULT_STEPS, **technique.call}
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
    rate = shapes_eval(torch.cat(images), prompts).all_correct
    return {"name": technique.name, "what": technique.what, "ms_per_image": 1e3 * seconds / len(prompts),
            "all_correct": rate, "all_correct_se": standard_error(rate, len(prompts)), "n": len(prompts),
            "warm_up_s": warm_up_s}


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
                  switch=two_pass_guidance),
        Technique("cached_text_states", "text states kept per text (the unconditional one encoded once)",
                  switch=cached_text_states),
        Technique("greedy_llm", "the LLM writes greedily (no sampling, no redraws)", {"do_sample": False}),
        Technique("no_llm", "no LLM: the prompt is drawn as typed", {"upsample": False}),
        Technique("plain_attention", "attention written out instead of PyTorch's SDPA", switch=plain_attention),
        Technique("channels_last", "UNet weights and activations in NHWC layout", switch=channels_last),
        Technique("bf16", "bf16 autocast", switch=bf16),
        Technique("one_thread", "one CPU thread instead of all", switch=lambda p: threads(1)),
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
    return rows


def quality_se(row: dict[str, Any]) -> float:
    """``row``'s all-correct standard error, counted as if at least one of its ``n`` trials went the other way.

    A rate of 64/64 has a binomial standard error of 0, which would make any
    comparison with it demand 1.000 again; one trial's worth of doubt is the least
    its ``n`` leaves (as in :func:`llmimg.course.reference.tolerance`).
    """
    from llmimg.core.evaluation import standard_error

    n = row.get("n")
    if not n:
        return float(row["all_correct_se"])
    return max(float(row["all_correct_se"]), standard_error(min(max(row["all_correct"], 1 / n), 1 - 1 / n), n))


def equal_quality(row: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether ``row``'s all-correct is not below ``reference``'s by more than one standard error of the difference.

    Both standard errors are floored at one trial (:func:`quality_se`).
    """
    se = (quality_se(row) ** 2 + quality_se(reference) ** 2) ** 0.5
    return row["all_correct"] >= reference["all_correct"] - se


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


def compare(pipe: ShapesPipeline, techniques: Sequence[Technique], prompts: Sequence[str],
            reference: dict[str, Any], *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Measure every technique on ``prompts``, stack the ones that help, and pick the fastest at equal quality.

    ``techniques[0]`` is the default setting that speed-ups are quoted against.
    ``reference`` (``all_correct``, ``all_correct_se`` and ``n``, e.g. the naive
    baseline's) is the quality a setting must keep (:func:`equal_quality`). The stack
    starts from the fastest equal-quality setting and tries, fastest first, every
    switch alone (no call options) that made the default more than 3 % faster at equal
    quality; a switch stays only if the stack with it is measured faster and still of
    equal quality (speed-ups need not multiply: a switch that helps a 10-step setting
    can slow a 1-step one). Returns ``rows`` (one per technique, then the stack if a
    switch stayed), ``stack_trials`` (every stack measured, with ``kept``), ``fastest``
    (a row), its :class:`Technique` under ``fastest_technique``, and
    ``meets_reference``: False when no setting, not even the default, kept the
    reference's quality; ``fastest`` and the stack are then held to the default's.
    """
    from tqdm.auto import tqdm

    by_name = {t.name: t for t in techniques}
    shown = tqdm(techniques, desc="techniques", disable=not show_progress(progress))
    rows = [measure(pipe, t, prompts, seed=seed) for t in shown]
    default = rows[0]
    for row in rows:
        row["speedup"] = default["ms_per_image"] / row["ms_per_image"]
    meets_reference = any(equal_quality(r, reference) for r in rows)
    target = reference if meets_reference else default  # else settle for the default's quality, and say so
    kept = [r for r in rows if equal_quality(r, target)]
    best = min(kept, key=lambda r: r["ms_per_image"])
    helpers = sorted((r for r in rows[1:] if not by_name[r["name"]].call and by_name[r["name"]].switch is not None
                      and r["speedup"] > 1.03 and equal_quality(r, default)), key=lambda r: r["ms_per_image"])
    stack, stack_row, trials = [by_name[best["name"]]], best, []
    for helper in helpers:
        trial = combine("stack", [*stack, by_name[helper["name"]]])
        row = measure(pipe, trial, prompts, seed=seed)
        row["speedup"] = default["ms_per_image"] / row["ms_per_image"]
        row["kept"] = equal_quality(row, target) and row["ms_per_image"] < stack_row["ms_per_image"]
        trials.append(row)
        if row["kept"]:
            stack, stack_row = [*stack, by_name[helper["name"]]], row
    if len(stack) > 1:
        rows.append({k: v for k, v in stack_row.items() if k != "kept"})
        by_name["stack"] = combine("stack", stack)
        best = rows[-1]
    return {"rows": rows, "stack_trials": trials, "fastest": best, "fastest_technique": by_name[best["name"]],
            "meets_reference": meets_reference}


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


__all__ = ["Technique", "bf16", "cached_text_states", "channels_last", "combine", "compare", "compiled", "deep_cache",
           "default_techniques", "equal_quality", "kv_cache", "measure", "plain_attention", "quality_se",
           "sampler_curve", "sampling", "scheduler", "swap_generator", "threads", "two_pass_guidance"]
