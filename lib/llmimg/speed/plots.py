"""The speed lab's pictures: a roofline, and speed against quality with its frontier."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def roofline(points: Sequence[dict[str, Any]], peak_gflops: float, bandwidth_gbs: float, *, ax: Any = None,
             title: str = "roofline") -> Any:
    """A roofline plot: each point's throughput against its arithmetic intensity, under the machine's two roofs.

    ``points`` are :func:`llmimg.speed.profiling.roofline_points` rows (``stage``,
    ``batch_size``, ``intensity`` in FLOP/byte, ``gflop_per_s``). A point below the
    slanted roof (``bandwidth × intensity``) is limited by memory traffic, one below the
    flat roof (the measured matmul peak) by arithmetic; far below both, by overhead.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    lo = min(0.5, *(p["intensity"] / 3 for p in points))
    hi = max(4 * peak_gflops / bandwidth_gbs, *(p["intensity"] * 3 for p in points))
    x = np.geomspace(lo, hi, 200)
    ax.plot(x, np.minimum(peak_gflops, bandwidth_gbs * x), "k-", lw=1.5,
            label=f"roof: {peak_gflops:.0f} GFLOP/s, {bandwidth_gbs:.0f} GB/s")
    markers = {1: "o", 32: "s"}
    for p in points:
        ax.scatter(p["intensity"], p["gflop_per_s"], marker=markers.get(p["batch_size"], "^"), s=40,
                   color={"clip": "C0", "llm": "C1", "denoise": "C2"}.get(p["stage"], "C3"))
        ax.annotate(f"{p['stage']} b{p['batch_size']}", (p["intensity"], p["gflop_per_s"]), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte of weights read)",
           ylabel="achieved GFLOP/s", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def speed_quality(rows: Sequence[dict[str, Any]], *, ax: Any = None, title: str = "speed against quality",
                  label: Sequence[str] = (), limit_ms: float | None = None) -> Any:
    """Each setting's ms per image against its all-correct (± one standard error), the frontier joined.

    ``rows`` are :func:`llmimg.speed.techniques.compare` rows. The frontier is the settings no
    other setting beats on both speed and quality; its points are named, and so are the
    rows named in ``label`` (naming every point of a crowded plot would hide them all).
    ``limit_ms``: the machine's ceiling for the fastest setting's work (milliseconds per
    image, :func:`llmimg.speed.profiling.throughput_limit`), drawn as a vertical line.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ordered = sorted(rows, key=lambda r: (r["ms_per_image"], -r["all_correct"]))
    frontier, best = [], -1.0
    for r in ordered:
        if r["all_correct"] > best:
            frontier.append(r)
            best = r["all_correct"]
    for r in rows:
        on = r in frontier
        ax.errorbar(r["ms_per_image"], r["all_correct"], r["all_correct_se"], fmt="o" if on else ".",
                    color="C3" if on else "C0", capsize=2, ms=6 if on else 5)
        if on or r["name"] in label:
            ax.annotate(r["name"], (r["ms_per_image"], r["all_correct"]), fontsize=7, xytext=(4, -3),
                        textcoords="offset points")
    ax.plot([r["ms_per_image"] for r in frontier], [r["all_correct"] for r in frontier], "-", color="C3", lw=1,
            label="frontier: nothing is both faster and better")
    if limit_ms is not None:
        ax.axvline(limit_ms, color="k", ls="--", lw=1,
                   label=f"this machine's limit for the fastest setting's work ({limit_ms:.2g} ms)")
    ax.set(xscale="log", xlabel="milliseconds per image (log)", ylabel="ShapesEval all-correct", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return ax
