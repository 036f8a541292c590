"""ShapesWorld as a torch ``Dataset``, with attribute labels for probes and judges."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llmimg.core.data.shapes_world import ShapesWorld
from llmimg.core.data.world import ATTRIBUTES, SPLITS, Scene


_INDEX = {name: {value: i for i, value in enumerate(values)} for name, values in ATTRIBUTES.items()}


def scene_labels(scene: Scene, max_objects: int) -> dict[str, np.ndarray]:
    """Integer labels of a scene, one slot per object in reading order, -1 in empty slots.

    Keys: ``shape``, ``colour``, ``size``, ``position`` (each shape ``(max_objects,)``)
    and ``count``; the integers index :data:`~llmimg.core.data.world.ATTRIBUTES`.
    """
    if len(scene) > max_objects:
        raise ValueError(f"the scene has {len(scene)} objects, more than max_objects={max_objects}")
    table = np.full((len(ATTRIBUTES), max_objects), -1, dtype=np.int64)
    for slot, obj in enumerate(scene):
        for row, (name, index) in enumerate(_INDEX.items()):
            table[row, slot] = index[getattr(obj, name)]
    labels = dict(zip(ATTRIBUTES, table))
    labels["count"] = np.array(len(scene), dtype=np.int64)
    return labels


class ShapesDataset(Dataset):
    """``length`` samples of one split of a :class:`ShapesWorld`, rendered on the fly.

    Each item is a dict: ``image`` (float32 tensor, 3×H×W, values in [0, 1]),
    ``description`` and ``prompt`` (strings), ``index``, and the integer labels of
    :func:`scene_labels` as tensors. The default collate function batches it.
    """

    def __init__(self, world: ShapesWorld | None = None, split: str = "train", length: int = 10_000) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.world = world or ShapesWorld()
        self.split = split
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length} samples")
        index %= self.length
        sample = self.world.sample(index, self.split)
        image = sample.image.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
        item: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "description": sample.description,
            "prompt": sample.prompt,
            "index": index,
        }
        item.update({name: torch.from_numpy(value)
                     for name, value in scene_labels(sample.scene, self.world.max_objects).items()})
        return item
