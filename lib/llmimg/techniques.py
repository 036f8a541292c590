"""Speed techniques for the pipeline, each measured side by side with its quality cost.

What notebook 08 and ``llmimg bench`` compare. A :class:`Technique` is a change to the
default fast setting (DPM-Solver++ at :data:`~llmimg.pipeline.DEFAULT_STEPS` guided
steps, the LLM sampling with its checker, fp32, SDPA attention): other call options
(a sampler and step count, greedy decoding, guidance on part of the steps, no LLM), a
*switch* applied around the calls (plain attention, ``channels_last``, bf16 autocast,
``torch.compile``, one thread, classifier-free guidance as two UNet passes instead of
one batched pass, text states cached per text), or another generator (a distilled
student, :mod:`llmimg.distillation`).

:func:`measure` draws the same prompts from the same seeds for every technique, in
batches, after one untimed warm-up batch, and scores the images with ShapesEval
against the prompts, so each row gives milliseconds per image and all-correct with its
standard error. :func:`sampler_curve` gives quality against step count for every
sampler, and :func:`kv_cache` times the LLM's greedy decoding with and without its KV
cache (checking that both write the same tokens).
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch

from llmimg import generator as gen_stage
from llmimg import llm as llm_stage
from llmimg.pipeline import DEFAULT_SCHEDULER, DEFAULT_STEPS, ShapesPipeline
from llmimg.profiling import noise_generators

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
def generator(pipe: ShapesPipeline, gen: gen_stage.ShapesGenerator, sampler: str) -> Iterator[None]:
    """Another generator (e.g. a distilled student) with its sampler for the calls inside."""
    saved = pipe.unet, pipe.scheduler, pipe.config.stage_configs
    pipe.use_generator(gen, sampler)
    try:
        yield
    finally:
        pipe.register_modules(unet=saved[0], scheduler=saved[1])
        pipe.register_to_config(stage_configs=saved[2])


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
def compiled(pipe: ShapesPipeline) -> Iterator[None]:
    """The UNet's forward through ``torch.compile`` (Inductor; the first call of each shape compiles).

    Dynamo's notes on graph breaks (DeepCache's step counter reads a tensor as a
    number) and on diffusers' cached version checks are kept out of the output.
    """
    quiet = [logging.getLogger(name) for name in ("torch._dynamo", "torch._inductor", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in quiet]
    forward = pipe.unet.forward
    pipe.unet.forward = torch.compile(forward)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torch\._dynamo")
            for logger in quiet:
                logger.setLevel(logging.ERROR)
            yield
    finally:
        pipe.unet.forward = forward
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


@contextmanager
def cached_text_states(pipe: ShapesPipeline) -> Iterator[None]:
    """The generator's text states kept per text: the unconditional ``""`` (encoded three times a call otherwise)
    and any description seen before are encoded once.

    Exact: states are padded to one fixed length, so a cached row is the row a fresh
    encoding would give.
    """
    gen = pipe.generator_stage
    encode, memo = gen.text_states, {}

    def cached(descriptions: list[str], check: bool) -> tuple[torch.Tensor, torch.Tensor]:
        missing = list(dict.fromkeys(d for d in descriptions if d not in memo))
        if missing:
            states, mask = encode(missing, check=check)
            memo.update({d: (states[k], mask[k]) for k, d in enumerate(missing)})
        rows = [memo[d] for d in descriptions]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    gen.text_states = cached
    try:
        yield
    finally:
        del gen.text_states  # the class's method again


@contextmanager
def two_pass_guidance(pipe: ShapesPipeline) -> Iterator[None]:
    """Classifier-free guidance as two UNet calls (unconditional, then conditional) instead of one batched call.

    The guided batch is ``[unconditional rows; conditional rows]``; this splits every
    UNet call into its two halves, which is what a pipeline without batched guidance does.
    """
    forward = pipe.unet.forward

    def halves(sample: torch.Tensor, timestep: Any, **kw: Any) -> Any:
        n = sample.shape[0] // 2
        if n == 0 or sample.shape[0] % 2:
            return forward(sample, timestep, **kw)

        def part(sl: slice) -> Any:
            t = timestep[sl] if torch.is_tensor(timestep) and timestep.ndim else timestep
            return forward(sample[sl], t, **{k: v[sl] if torch.is_tensor(v) else v for k, v in kw.items()}).sample

        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=torch.cat([part(slice(0, n)), part(slice(n, None))]))

    pipe.unet.forward = halves
    try:
        yield
    finally:
        pipe.unet.forward = forward


@contextmanager
def deep_cache(pipe: ShapesPipeline, interval: int = 2) -> Iterator[None]:
    """DeepCache (Ma et al., 2024): reuse the UNet's deep features for ``interval - 1`` steps out of every ``interval``.

    Between neighbouring steps the deep, low-resolution features change little. A full
    step runs the whole UNet and keeps what enters its last up block; a cached step runs
    only the outer ring: the time embedding, ``conv_in``, the first down block (for its
    skip connections), the last up block on the kept features, and ``conv_out``. A new
    sampling run (the timestep goes up, or the batch changes) starts with a full step.
    """
    unet = pipe.unet
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    if getattr(first, "has_cross_attention", False) or getattr(last, "has_cross_attention", False):
        raise ValueError("deep_cache needs a UNet whose outermost blocks have no cross-attention")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be a positive whole number, got {interval!r}")
    forward, state = unet.forward, {"t": None, "calls": 0, "deep": None}

    def keep(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        state["deep"] = kwargs["hidden_states"]

    def cached_forward(sample: torch.Tensor, timestep: Any, class_labels: Any = None, **kw: Any) -> Any:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        deep = state["deep"]
        if state["t"] is None or t >= state["t"] or deep is None or deep.shape[0] != sample.shape[0]:
            state["calls"] = 0
        state["t"], full = t, state["calls"] % interval == 0
        state["calls"] += 1
        if full:
            hook = last.register_forward_pre_hook(keep, with_kwargs=True)
            try:
                return forward(sample, timestep, class_labels=class_labels, **kw)
            finally:
                hook.remove()
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
        class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
        if class_emb is not None:
            emb = emb + class_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        h = unet.conv_in(sample)
        _, res = first(hidden_states=h, temb=emb)
        skips = (h, *res)[:len(last.resnets)]  # the last up block reads the first skip connections
        out = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips)
        if unet.conv_norm_out is not None:
            out = unet.conv_act(unet.conv_norm_out(out))
        return UNet2DConditionOutput(sample=unet.conv_out(out))

    unet.forward = cached_forward
    try:
        yield
    finally:
        unet.forward = forward


# -- measuring ------------------------------------------------------------------------
def measure(pipe: ShapesPipeline, technique: Technique, prompts: Sequence[str], *, batch_size: int = 32,
            seed: int = 0, warm_up: bool = True) -> dict[str, Any]:
    """Milliseconds per image and ShapesEval all-correct (with its standard error) of ``technique`` on ``prompts``.

    Image ``k`` always gets the noise of ``seed + k``. With ``warm_up``, one untimed
    batch (the first) runs before the timed pass, so lazy set-up and compilation are not
    counted; leave it off for settings too slow to draw twice (the naive baseline).
    """
    from llmimg.evaluation import shapes_eval, standard_error

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
            out = pipe(batch, generator=noise_generators(seed + start, len(batch)), output_type="pt", **call)
            seconds += time.perf_counter() - t0
            images.append(out.images)
    rate = shapes_eval(torch.cat(images), prompts).all_correct
    return {"name": technique.name, "what": technique.what, "ms_per_image": 1e3 * seconds / len(prompts),
            "all_correct": rate, "all_correct_se": standard_error(rate, len(prompts)), "n": len(prompts),
            "warm_up_s": warm_up_s}


def default_techniques(distilled: dict[int, gen_stage.ShapesGenerator] | None = None,
                       compile_unet: bool = True) -> list[Technique]:
    """The techniques notebook 08 and ``llmimg bench`` compare, the default setting first.

    ``distilled`` maps step counts to distilled students (:func:`llmimg.distillation.get`).
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
                              lambda p, g=student: generator(p, g, "ddim")))
        rows.append(Technique(f"distilled_{steps}_greedy", f"distilled to {steps} step(s), LLM greedy",
                              {"num_inference_steps": steps, "do_sample": False},
                              lambda p, g=student: generator(p, g, "ddim")))
    return rows


def quality_se(row: dict[str, Any]) -> float:
    """``row``'s all-correct standard error, counted as if at least one of its ``n`` trials went the other way.

    A rate of 64/64 has a binomial standard error of 0, which would make any
    comparison with it demand 1.000 again; one trial's worth of doubt is the least
    its ``n`` leaves (as in :func:`llmimg.results.tolerance`).
    """
    from llmimg.evaluation import standard_error

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
    rows = [measure(pipe, t, prompts, seed=seed) for t in tqdm(techniques, desc="techniques", disable=not progress)]
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
    from llmimg.evaluation import shapes_eval, standard_error

    prompts = list(prompts)
    descriptions = [d or p for d, p in zip(pipe.writer.upsample(prompts, seed=seed), prompts)]
    teacher = pipe.generator_stage
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
           "default_techniques", "equal_quality", "generator", "kv_cache", "measure", "plain_attention", "quality_se",
           "sampler_curve", "scheduler", "threads", "two_pass_guidance"]
