"""Tables of ShapesWorld's attributes and a measurement of how fast it serves data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from llmimg.core.data.dataset import ShapesDataset
from llmimg.core.data.shapes_world import ShapesWorld
from llmimg.core.data.world import COLOUR_NAMES, SHAPES


def scene_table(world: ShapesWorld, n: int, split: str = "train") -> pd.DataFrame:
    """One row per object of the first ``n`` scenes of ``split``: its attributes and scene size."""
    rows = []
    for index in range(n):
        scene = world.scene(index, split)
        for obj in scene:
            rows.append({"index": index, "n_objects": len(scene), "shape": obj.shape,
                         "colour": obj.colour, "size": obj.size, "position": obj.position})
    return pd.DataFrame(rows)


def pair_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Colour × shape counts of a :func:`scene_table`, in vocabulary order (zeros kept)."""
    counts = pd.crosstab(table["colour"], table["shape"])
    return counts.reindex(index=list(COLOUR_NAMES), columns=list(SHAPES), fill_value=0)


def measure_throughput(world: ShapesWorld | None = None, n: int = 2000, repeats: int = 5,
                       threads: int = 1) -> dict[str, float]:
    """Samples per second served by a :class:`ShapesDataset` (scene, image, captions, labels as tensors).

    Runs ``repeats`` timed passes over ``n`` fresh indices on ``threads`` torch threads and
    reports the median rate (and the slowest and fastest pass), so one noisy pass on a
    shared machine does not decide the number.
    """
    if n <= 0 or repeats <= 0 or threads <= 0:
        raise ValueError("n, repeats and threads must be positive")
    dataset = ShapesDataset(world or ShapesWorld(), "train", length=n * repeats)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = []
        for r in range(repeats):
            start = time.perf_counter()
            for i in range(r * n, (r + 1) * n):
                dataset[i]
            rates.append(n / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return {"images_per_s": float(np.median(rates)), "images_per_s_min": float(min(rates)),
            "images_per_s_max": float(max(rates)), "threads": threads, "n": n, "repeats": repeats}
