"""Where the pipeline's time goes: what ``llmimg bench`` / ``make bench`` and notebooks 06 and 08 measure.

* per-stage latency medians (CLIP encode, LLM generate, denoising loop,
  post-processing) at batch 1 and batch 32, and images per second at batch 32;
* the default fast setting (DPM-Solver++, :data:`~llmimg.pipelines.shapes.DEFAULT_STEPS` steps)
  against a naive baseline: the same models sampled with DDPM over every training
  timestep. Both draw the same prompts from the same seeds, side by side in one run,
  and both are scored by ShapesEval, so the speed-up is quoted together with the two
  all-correct rates it was measured at;
* the process's peak memory (and the GPU's, on a GPU);
* where the time goes, operator by operator (:func:`top_operators`, ``torch.profiler``);
* how far the code is from the machine: floating-point operations per image and per
  stage (:func:`count_flops`, torch's ``FlopCounterMode``: matrix products,
  convolutions and attention), the measured peak matmul throughput
  (:func:`peak_matmul_gflops`) and memory bandwidth (:func:`memory_bandwidth_gbs`), and
  from these the model FLOP utilisation (MFU, the share of that peak a step achieves)
  of one guided sampling step and one training step of the generator, and each stage's
  point on a roofline (:func:`roofline_points`: FLOPs over the weight bytes it reads).

Timings are medians of repeated runs after a warm-up run; machines are shared and
noisy, so compare ratios measured in one run rather than numbers from different runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from llmimg.core.seeding import noise_generators
from llmimg.core.training import to_device
from llmimg.pipelines.shapes import STAGES, ShapesPipeline
from llmimg.stages import generator as gen_stage

def stage_latency(pipe: ShapesPipeline, prompts: Sequence[str], *, repeats: int = 5, seed: int = 0,
                  **call: Any) -> dict[str, float]:
    """Median milliseconds of each stage and of the whole call for the batch ``prompts`` (after one warm-up run)."""
    runs = []
    for _ in range(repeats + 1):
        out = pipe(list(prompts), generator=noise_generators(seed, len(prompts)), output_type="pt", **call)
        runs.append(out.timings)
    runs = runs[1:]  # the first run pays for lazy initialisation
    return {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "total")}


def peak_memory_mb(device: torch.device | None = None) -> dict[str, float]:
    """Peak resident memory of this process (and peak allocated GPU memory on CUDA), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mb": rss / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    if device is not None and device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# Which stage each top-level module belongs to, by class name (as FlopCounterMode names them):
# open_clip's encoders call their towers (``Transformer``, ``VisionTransformer``) directly.
MODEL_STAGES = {"Transformer": "clip", "VisionTransformer": "clip", "CLIP": "clip", "CustomTextCLIP": "clip",
                "PrefixMapper": "llm", "GPT2LMHeadModel": "llm", "UNet2DConditionModel": "denoise"}


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Floating-point operations of ``fn()``: the total, and by top-level module (class name).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products,
    convolutions and attention (2 operations per multiply-add) and nothing else: the
    convention of model FLOP utilisation, where element-wise work is overhead.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                 if name != "Global" and "." not in name}
    return counter.get_total_flops(), by_module


def top_operators(fn: Callable[[], Any], *, top: int = 10, trace: str | Path | None = None) -> str:
    """``torch.profiler``'s table of the ``top`` operators of ``fn()`` by their own CPU time.

    With ``trace`` it also writes a Chrome trace there (open it at ``chrome://tracing``
    or ui.perfetto.dev), where every operator of the run lies on a timeline.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with _native_stderr_silenced(), profile(activities=activities) as prof:
        fn()
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Keep what C++ code writes straight to file descriptor 2 out of the output (the profiler's Kineto layer
    prints its start, stop and "no GPU found" notes there, which Jupyter would show as errors)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def median_seconds(fn: Callable[[], Any], repeats: int = 5, device: torch.device | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run (synchronised on CUDA)."""
    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times = []
    for _ in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def peak_matmul_gflops(size: int = 1024, repeats: int = 5, device: torch.device | str | None = None,
                       dtype: torch.dtype = torch.float32) -> float:
    """The device's measured matmul throughput in GFLOP/s: ``2 n³`` operations per ``n × n`` product.

    The yardstick for MFU: what this machine does on the operation deep nets are made
    of, at a size where the product is compute-bound, with the threads torch uses.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    device = torch.device(device or "cpu")
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats, device) / 1e9


def memory_bandwidth_gbs(mib: int = 256, repeats: int = 5, device: torch.device | str | None = None) -> float:
    """The device's measured memory bandwidth in GB/s: a copy of ``mib`` MiB reads and writes every byte once."""
    if mib < 1:
        raise ValueError(f"mib must be positive, got {mib}")
    device = torch.device(device or "cpu")
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), repeats, device) / 1e9


def mfu(flops: float, seconds: float, peak_gflops: float) -> float:
    """Model FLOP utilisation: the share of the peak throughput that ``flops`` in ``seconds`` achieve."""
    if seconds <= 0 or peak_gflops <= 0:
        raise ValueError(f"seconds and peak_gflops must be positive, got {seconds} and {peak_gflops}")
    return flops / seconds / (peak_gflops * 1e9)


def sampling_step_cost(pipe: ShapesPipeline, descriptions: Sequence[str], *, repeats: int = 5,
                       seed: int = 0) -> dict[str, float]:
    """FLOPs and median seconds of one guided denoising step of the generator on a batch of ``descriptions``."""
    gen = pipe.image_generator
    states, mask = gen.text_states(list(descriptions), check=False)
    uncond = gen.text_states([""], check=False)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # the pipeline's own keeps its state
    noise = noise_generators(seed, len(descriptions))

    def step() -> None:
        latents = gen.prepare_latents(len(descriptions), noise, scheduler)
        gen.denoise(latents, states, mask, uncond, 1, gen.config.guidance_scale, scheduler, noise)

    flops, _ = count_flops(step)
    return {"flops": flops, "seconds": median_seconds(step, repeats, pipe.device)}


def training_step_cost(pipe: ShapesPipeline, *, repeats: int = 3, n_bank: int = 256) -> dict[str, float]:
    """FLOPs (forward and backward) and median seconds of one optimiser step of the generator's training.

    The step is the real one (``make_batch_fn``, ``make_loss_fn``, AdamW) at the
    generator's batch size, on a copy of its UNet, so the pipeline is left untouched;
    ``n_bank`` scenes are rendered to draw the batches from.
    """
    gen = pipe.image_generator
    config = dataclasses.replace(gen.config, n_train=n_bank)
    batch = gen_stage.make_batch_fn(config, gen.text_encoder, gen_stage.make_bank(config))
    loss_fn = gen_stage.make_loss_fn(config, gen.scheduler)
    unet = copy.deepcopy(gen.unet).train().requires_grad_(True)  # the pipeline keeps its UNet frozen
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.train.lr)
    b = to_device(batch(0), pipe.device)

    def step() -> None:
        loss_fn(unet, b).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    flops, _ = count_flops(step)
    return {"flops": flops, "seconds": median_seconds(step, repeats, pipe.device),
            "batch_size": config.train.batch_size}


def flops_by_stage(pipe: ShapesPipeline, prompts: Sequence[str], seed: int = 0, **call: Any) -> dict[str, float]:
    """FLOPs per image of one pipeline call on ``prompts``: each stage's and the total.

    The generator's text encoder is CLIP's text tower, so its work counts under ``clip``;
    the LLM's counts include the checker's redraws; ``other`` holds the products outside
    any model's modules (CLIP's final projections).
    """
    total, by_module = count_flops(lambda: pipe(list(prompts), generator=noise_generators(seed, len(prompts)),
                                                output_type="pt", **call))
    stages = dict.fromkeys(("clip", "llm", "denoise", "other"), 0.0)
    for name, flops in by_module.items():
        stages[MODEL_STAGES.get(name, "other")] += flops
    stages["other"] += total - sum(by_module.values())
    return {**{k: v / len(prompts) for k, v in stages.items()}, "total": total / len(prompts)}


COMPONENT_STAGES = {"clip": "clip", "llm": "llm", "prefix_mapper": "llm", "unet": "denoise"}


def weight_bytes_read(pipe: ShapesPipeline, fn: Callable[[], Any], *, activations: bool = False) -> dict[str, float]:
    """Bytes each stage moves during ``fn()``: every layer's own weights, once per call of that layer.

    Weights alone are a lower bound on a stage's memory traffic (weights evicted from cache
    and read again come on top), so ``FLOPs / bytes`` is an upper bound on its arithmetic
    intensity. Embedding tables are left out: a lookup reads a few rows, not the table.
    With ``activations``, every leaf layer also counts the tensors it reads and writes
    (its inputs and outputs), an *estimate* of the full traffic from the layer shapes:
    it misses the element-wise work between layers (residual additions, attention's
    softmax inside SDPA), and counts as memory what a cache may hold.
    """
    moved = dict.fromkeys(("clip", "llm", "denoise"), 0.0)

    def tensor_bytes(values: Any) -> int:
        values = values if isinstance(values, (tuple, list)) else (values,)
        return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))

    def count(stage: str, size: int, leaf: bool) -> Callable[..., None]:
        def hook(_module: Any, inputs: Any, output: Any) -> None:
            extra = tensor_bytes(inputs) + tensor_bytes(output) if activations and leaf else 0
            moved[stage] += size + extra
        return hook

    hooks, seen = [], set()
    for component, stage in COMPONENT_STAGES.items():
        model = pipe.components.get(component)
        if not isinstance(model, torch.nn.Module):
            continue
        for layer in model.modules():
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            leaf = next(layer.children(), None) is None
            size = 0 if isinstance(layer, torch.nn.Embedding) else sum(
                p.numel() * p.element_size() for p in layer.parameters(recurse=False))
            if size or (activations and leaf):
                hooks.append(layer.register_forward_hook(count(stage, size, leaf)))
    try:
        fn()
    finally:
        for hook in hooks:
            hook.remove()
    return moved


def _by_stage(by_module: dict[str, int]) -> dict[str, float]:
    """:func:`count_flops`'s counts by top-level module, summed into the model stages ``clip``, ``llm``, ``denoise``."""
    flops = dict.fromkeys(("clip", "llm", "denoise"), 0.0)
    for name, n in by_module.items():
        if MODEL_STAGES.get(name) in flops:
            flops[MODEL_STAGES[name]] += n
    return flops


def throughput_limit(pipe: ShapesPipeline, prompts: Sequence[str], peak_gflops: float, bandwidth_gbs: float, *,
                     seed: int = 0, **call: Any) -> dict[str, Any]:
    """The most images per second this machine could draw with the work of one call on ``prompts``.

    Each model stage needs at least ``max(F / peak, B / bandwidth)`` seconds per image (a
    roofline per stage: ``F`` its FLOPs, :func:`count_flops`; ``B`` its memory traffic with
    activations, :func:`weight_bytes_read`, an estimate from the layer shapes); the stages
    run one after another, so the limit is one over the sum. ``compute_images_per_s`` and
    ``memory_images_per_s`` are the two bounds taken alone, over all stages.
    """
    def run() -> None:
        pipe(list(prompts), generator=noise_generators(seed, len(prompts)), output_type="pt", **call)

    n = len(prompts)
    _, by_module = count_flops(run)
    flops = {k: v / n for k, v in _by_stage(by_module).items()}
    moved = {k: v / n for k, v in weight_bytes_read(pipe, run, activations=True).items()}
    peak, bandwidth = 1e9 * peak_gflops, 1e9 * bandwidth_gbs
    seconds = {k: max(flops[k] / peak, moved[k] / bandwidth) for k in flops}
    return {"batch_size": n, "flops_per_image": flops, "bytes_per_image": moved,
            "bound_by": {k: "compute" if flops[k] / peak >= moved[k] / bandwidth else "memory" for k in flops},
            "compute_images_per_s": peak / sum(flops.values()),
            "memory_images_per_s": bandwidth / sum(moved.values()),
            "limit_images_per_s": 1 / sum(seconds.values())}


def roofline_points(pipe: ShapesPipeline, prompts: Sequence[str], *, repeats: int = 3, seed: int = 0,
                    **call: Any) -> list[dict[str, float]]:
    """Each model stage of one call on ``prompts`` as a point for a roofline plot.

    One row per stage (``clip``, ``llm``, ``denoise``): its FLOPs (:func:`count_flops`),
    the weight bytes it reads (:func:`weight_bytes_read`), the arithmetic intensity
    ``flops / bytes``, its median milliseconds (:func:`stage_latency`) and the
    throughput it reached, ``gflop_per_s``. Plot them with :func:`llmimg.core.viz.roofline`.
    """
    def run() -> None:
        pipe(list(prompts), generator=noise_generators(seed, len(prompts)), output_type="pt", **call)

    _, by_module = count_flops(run)
    flops = _by_stage(by_module)
    bytes_read = weight_bytes_read(pipe, run)
    latency = stage_latency(pipe, prompts, repeats=repeats, seed=seed, **call)
    ms = {"clip": latency["clip_encode"], "llm": latency["llm_generate"], "denoise": latency["denoise"]}
    return [{"stage": stage, "batch_size": len(prompts), "flops": flops[stage], "bytes": bytes_read[stage],
             "intensity": flops[stage] / max(bytes_read[stage], 1.0), "ms": ms[stage],
             "gflop_per_s": flops[stage] / (ms[stage] * 1e6)} for stage in flops]


__all__ = ["COMPONENT_STAGES", "MODEL_STAGES", "count_flops", "flops_by_stage", "median_seconds",
           "memory_bandwidth_gbs", "mfu", "peak_matmul_gflops", "peak_memory_mb", "roofline_points",
           "sampling_step_cost", "stage_latency", "throughput_limit", "top_operators", "training_step_cost",
           "weight_bytes_read"]
