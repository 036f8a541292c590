"""Speed of the whole pipeline: what ``llmimg bench`` / ``make bench`` and notebook 06 measure.

* per-stage latency medians (CLIP encode, LLM generate, denoising loop,
  post-processing) at batch 1 and batch 32, and images per second at batch 32;
* the default fast setting (DPM-Solver++, :data:`~llmimg.pipeline.DEFAULT_STEPS` steps)
  against a naive baseline: the same models sampled with DDPM over every training
  timestep. Both draw the same prompts from the same seeds, side by side in one run,
  and both are scored by ShapesEval, so the speed-up is quoted together with the two
  all-correct rates it was measured at;
* the process's peak memory (and the GPU's, on a GPU).

Timings are medians of repeated runs after a warm-up run; machines are shared and
noisy, so compare ratios measured in one run rather than numbers from different runs.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Sequence

import torch

from llmimg.config import Profile, get_profile
from llmimg.pipeline import DEFAULT_SCHEDULER, DEFAULT_STEPS, STAGES, ShapesPipeline


def _generators(seed: int, n: int) -> list[torch.Generator]:
    """One noise stream per image, so image k is the same whatever the batch it is in."""
    return [torch.Generator().manual_seed(seed + k) for k in range(n)]


def stage_latency(pipe: ShapesPipeline, prompts: Sequence[str], *, repeats: int = 5, seed: int = 0,
                  **call: Any) -> dict[str, float]:
    """Median milliseconds of each stage and of the whole call for the batch ``prompts`` (after one warm-up run)."""
    runs = []
    for _ in range(repeats + 1):
        out = pipe(list(prompts), generator=_generators(seed, len(prompts)), output_type="pt", **call)
        runs.append(out.timings)
    runs = runs[1:]  # the first run pays for lazy initialisation
    return {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "total")}


def sample_and_score(pipe: ShapesPipeline, samples: Sequence[Any], *, batch_size: int = 32, seed: int = 0,
                     **call: Any) -> tuple[float, float]:
    """ShapesEval all-correct of ``pipe`` on the samples' prompts, and its images per second."""
    from llmimg.evaluation import shapes_eval

    prompts = [s.prompt for s in samples]
    gens = _generators(seed, len(prompts))
    images, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        images.append(pipe(prompts[i:i + batch_size], generator=gens[i:i + batch_size], output_type="pt",
                           **call).images)
    seconds = time.perf_counter() - t0
    return shapes_eval(torch.cat(images), prompts).all_correct, len(prompts) / seconds


def peak_memory_mb(device: torch.device | None = None) -> dict[str, float]:
    """Peak resident memory of this process (and peak allocated GPU memory on CUDA), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_mb": rss / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    if device is not None and device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def bench_pipeline(profile: str | Profile | None = None, *, n_quality: int | None = None, repeats: int = 5,
                   progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """The pipeline's benchmark as one JSON-ready dict (keys in the README's "Benchmark" section)."""
    from diffusers import DDPMScheduler

    from llmimg import pipeline as P
    from llmimg.data import ShapesWorld

    profile = get_profile(profile)
    n_quality = n_quality or profile.pick(smoke=4, default=32, full=256)
    pipe = P.get(profile, progress=progress)
    world = ShapesWorld(seed=seed, max_objects=2)
    samples = list(world.samples(n_quality, "val"))
    batch32 = [s.prompt for s in world.samples(32, "val", start=n_quality)]
    fast = {"num_inference_steps": DEFAULT_STEPS}
    latency = {"batch_1": stage_latency(pipe, batch32[:1], repeats=repeats, seed=seed, **fast),
               "batch_32": stage_latency(pipe, batch32, repeats=repeats, seed=seed, **fast)}

    steps = pipe.scheduler.config.num_train_timesteps
    fast_scheduler = pipe.scheduler
    pipe.scheduler = DDPMScheduler.from_config(fast_scheduler.config)
    baseline_all_correct, baseline_per_s = sample_and_score(pipe, samples, seed=seed, num_inference_steps=steps)
    pipe.scheduler = fast_scheduler
    # The fast setting draws the same prompts from the same seeds right after, so the ratio is like for like.
    all_correct, fast_per_s = sample_and_score(pipe, samples, seed=seed, **fast)

    ms = {k: {stage: round(v, 2) for stage, v in d.items()} for k, d in latency.items()}
    return {
        "profile": str(profile),
        "device": str(pipe.device),
        "threads": torch.get_num_threads(),
        "stage_latency_ms": ms,
        "end_to_end_ms_batch_1": ms["batch_1"]["total"],
        "images_per_s": round(32_000 / latency["batch_32"]["total"], 2),
        "fast_setting": f"{DEFAULT_SCHEDULER} {DEFAULT_STEPS} steps",
        "baseline_setting": f"ddpm {steps} steps",
        "quality_prompts": n_quality,
        "all_correct": round(all_correct, 4),
        "baseline_all_correct": round(baseline_all_correct, 4),
        "quality_images_per_s": round(fast_per_s, 3),
        "baseline_images_per_s": round(baseline_per_s, 4),
        "speedup_vs_baseline": round(fast_per_s / baseline_per_s, 1),
        **{k: round(v, 1) for k, v in peak_memory_mb(pipe.device).items()},
    }


__all__ = ["bench_pipeline", "peak_memory_mb", "sample_and_score", "stage_latency"]
