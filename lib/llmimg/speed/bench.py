"""The benchmark of ``llmimg bench`` / ``make bench``: the pipeline's speed and its quality, as one JSON record.

Timings are medians of repeated runs after a warm-up run; machines are shared and
noisy, so compare ratios measured in one run rather than numbers from different runs.
The README's "Benchmark" section documents the keys.
"""

from __future__ import annotations

from typing import Any

import torch

from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.pipelines import shapes as P
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS
from llmimg.speed import distillation
from llmimg.speed import techniques as T
from llmimg.speed.profiling import (flops_by_stage, memory_bandwidth_gbs, mfu, peak_matmul_gflops, peak_memory_mb,
                                    sampling_step_cost, stage_latency, throughput_limit, training_step_cost)


def bench_pipeline(profile: str | Profile | None = None, *, n_quality: int | None = None, repeats: int = 5,
                   progress: bool = True, seed: int = 0, compile_unet: bool = True) -> dict[str, Any]:
    """The pipeline's benchmark as one JSON-ready dict (keys in the README's "Benchmark" section)."""
    profile = get_profile(profile)
    n_quality = n_quality or profile.size("bench.quality_n")
    n_techniques = max(n_quality, profile.size("bench.techniques_n"))
    pipe = P.get(profile, progress=progress)
    students = {steps: distillation.get(profile, steps=steps, progress=progress) for steps in (2, 1)}
    world = ShapesWorld(seed=seed, max_objects=2)
    samples = list(world.samples(n_techniques, "val"))
    prompts = [s.prompt for s in samples]
    samples = samples[:n_quality]
    batch32 = [s.prompt for s in world.samples(32, "val", start=n_techniques)]
    fast = {"num_inference_steps": DEFAULT_STEPS}
    latency = {"batch_1": stage_latency(pipe, batch32[:1], repeats=repeats, seed=seed, **fast),
               "batch_32": stage_latency(pipe, batch32, repeats=repeats, seed=seed, **fast)}

    steps = pipe.scheduler.config.num_train_timesteps
    quality = [s.prompt for s in samples]
    naive = T.Technique("baseline", f"ddpm {steps} steps", {"num_inference_steps": steps},
                        lambda p: T.scheduler(p, "ddpm"))
    baseline = T.measure(pipe, naive, quality, seed=seed, warm_up=False)
    # The fast setting draws the same prompts from the same seeds right after, so the ratio is like for like.
    fast_row = T.measure(pipe, T.Technique("fast", "default", fast), quality, seed=seed, warm_up=False)
    baseline_ms = baseline["ms_per_image"]
    techniques = T.default_techniques(students, compile_unet=compile_unet)
    compared = T.compare(pipe, techniques, prompts, baseline, seed=seed, trials=repeats, timing_prompts=batch32,
                         progress=progress)
    fastest, fastest_technique = compared["fastest"], compared["fastest_technique"]
    peak, bandwidth = peak_matmul_gflops(device=pipe.device), memory_bandwidth_gbs(device=pipe.device)
    with fastest_technique.applied(pipe):
        call = fastest_technique.options
        fastest_latency = {n: stage_latency(pipe, batch32[:n], repeats=repeats, seed=seed, **call) for n in (1, 32)}
        limit = throughput_limit(pipe, batch32, peak, bandwidth, seed=seed, **call)
    fastest_per_s = 32_000 / fastest_latency[32]["total"]
    for_one = T.fastest_for_one(pipe, compared, batch32[0], repeats=repeats, seed=seed)[0]
    curve = T.sampler_curve(pipe, prompts, seed=seed, distilled=students)
    kv = T.kv_cache(pipe, batch32, repeats=repeats)
    by_batch = {n: T.measure(pipe, techniques[0], batch32, batch_size=n, seed=seed)["ms_per_image"]
                for n in (1, 8, 32)}

    per_image = flops_by_stage(pipe, batch32, seed=seed, **fast)
    sample_step = sampling_step_cost(pipe, [s.description for s in samples[:32]], repeats=repeats, seed=seed)
    train_step = training_step_cost(pipe)

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
        "all_correct": round(fast_row["all_correct"], 4),
        "baseline_all_correct": round(baseline["all_correct"], 4),
        "quality_images_per_s": round(1e3 / fast_row["ms_per_image"], 3),
        "baseline_images_per_s": round(1e3 / baseline_ms, 4),
        "speedup_vs_baseline": round(baseline_ms / fast_row["ms_per_image"], 1),
        "flops_per_image": round(per_image["total"]),
        "flops_per_image_by_stage": {k: round(v) for k, v in per_image.items() if k != "total"},
        "peak_matmul_gflops": round(peak, 1),
        "memory_bandwidth_gbs": round(bandwidth, 1),
        "sample_step": {"batch_size": min(32, n_quality), "gflops": round(sample_step["flops"] / 1e9, 2),
                        "ms": round(1e3 * sample_step["seconds"], 2)},
        "train_step": {"batch_size": train_step["batch_size"], "gflops": round(train_step["flops"] / 1e9, 2),
                       "ms": round(1e3 * train_step["seconds"], 2)},
        "techniques": {r["name"]: technique_record(r) for r in compared["rows"]},
        "technique_prompts": n_techniques,
        "timing_trials": compared["trials"],
        "timing_noise": round(compared["noise"], 4),
        "stack_trials": [{**technique_record(r), "gain": round(r["gain"], 4), "kept": r["kept"]}
                         for r in compared["stack_trials"]],
        "fastest_setting": {**technique_record(fastest),
                            "name": fastest["name"],
                            "speedup_vs_baseline": round(baseline_ms / fastest["ms_per_image"], 1),
                            "baseline_all_correct_se": round(T.quality_se(baseline), 4),
                            "meets_baseline_quality": compared["meets_reference"],
                            "end_to_end_ms_batch_1": round(fastest_latency[1]["total"], 2),
                            "images_per_s": round(fastest_per_s, 2),
                            "stage_latency_ms": {str(n): {k: round(v, 2) for k, v in d.items()}
                                                 for n, d in fastest_latency.items()},
                            "llm_share": round(fastest_latency[32]["llm_generate"] / fastest_latency[32]["total"], 4),
                            "limit_images_per_s": round(limit["limit_images_per_s"], 1),
                            "compute_bound_images_per_s": round(limit["compute_images_per_s"], 1),
                            "memory_bound_images_per_s": round(limit["memory_images_per_s"], 1),
                            "fraction_of_limit": round(fastest_per_s / limit["limit_images_per_s"], 4)},
        "fastest_for_one": {"name": for_one["name"], "what": for_one["what"],
                            "all_correct": round(for_one["all_correct"], 4),
                            "end_to_end_ms_batch_1": round(for_one["end_to_end_ms"], 2),
                            "stage_latency_ms": {k: round(v, 2) for k, v in for_one["stage_latency_ms"].items()}},
        "sampler_curve": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in curve],
        "kv_cache": {k: round(v, 3) if isinstance(v, float) else v for k, v in kv.items()},
        "images_per_s_by_batch_size": {str(n): round(1e3 / ms, 2) for n, ms in by_batch.items()},
        "mfu_sample": round(mfu(sample_step["flops"], sample_step["seconds"], peak), 4),
        "mfu_train": round(mfu(train_step["flops"], train_step["seconds"], peak), 4),
        **{k: round(v, 1) for k, v in peak_memory_mb(pipe.device).items()},
    }


def technique_record(row: dict[str, Any]) -> dict[str, Any]:
    """One technique's row for the JSON: timing median and spread, quality, and the paired verdict against the
    baseline under both readings."""
    return {"what": row["what"], "speedup": round(row["speedup"], 3), "ms_per_image": round(row["ms_per_image"], 2),
            "ms_min": round(row["ms_min"], 2), "ms_max": round(row["ms_max"], 2),
            "all_correct": round(row["all_correct"], 4), "all_correct_se": round(row["all_correct_se"], 4),
            "paired_difference": round(row["paired_difference"], 4), "paired_se": round(row["paired_se"], 4),
            "n_paired": row["n_paired"], "keeps_baseline_quality": row["keeps_quality"],
            "keeps_baseline_quality_1se": row["keeps_quality_1se"]}


__all__ = ["bench_pipeline", "technique_record"]
