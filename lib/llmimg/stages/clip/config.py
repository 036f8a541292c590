"""What defines a trained CLIP: the open_clip model config it is built from, its data and its training."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, get_profile
from llmimg.core.training import StageConfig, TrainConfig

STAGE = "clip"
FORMAT = 2  # bump when a change to this stage's code changes what a trained CLIP is
CONFIG_DIR = Path(__file__).parent / "model_configs"
RETRAIN = "llmimg train clip --force"


@dataclass(frozen=True)
class ClipConfig(StageConfig):
    """Everything that determines a trained CLIP: model config name, data and training."""

    model_name: str = "shapes-clip-small"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=128, lr=1e-3))
    n_train: int = 20_000  # training scenes rendered once and drawn from
    prompt_rate: float = 0.25
    hard_negative_weight: float = 1.0  # weight of the binding loss (see train.hard_negative); 0 turns it off
    seed: int = 0
    # The world it learns (llmimg.core.data.worlds); the LLM and generator built on it follow it.
    world: str = field(default="shapes", metadata={"omit_default": True})

    def __post_init__(self) -> None:
        from llmimg.core.data.worlds import check_world

        check_world(self.world)


def default_config(profile: str | Profile | None = None, world: str = "shapes") -> ClipConfig:
    """The CLIP each profile trains: seconds at ``smoke``, minutes on a CPU at ``default``, a GPU at ``full``.

    For the GenEval-shaped ``world`` its model config is the ``-geneval`` variant: a context
    and vocabulary large enough for four described objects and the new words.
    """
    p = get_profile(profile)
    return ClipConfig(
        world=world, model_name=p.size("clip.model") + ("-geneval" if world == "geneval" else ""),
        train=TrainConfig(steps=p.size("clip.steps"), batch_size=p.size("clip.batch_size"), lr=p.size("clip.lr"),
                          warmup_steps=p.size("clip.warmup_steps")),
        n_train=p.size("clip.n_train"),
    )


def model_config(name: str) -> dict[str, Any]:
    """The open_clip model config ``name`` from ``model_configs/``."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ValueError(f"unknown CLIP config {name!r}; choose one of {known}")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["CONFIG_DIR", "ClipConfig", "FORMAT", "RETRAIN", "STAGE", "default_config", "model_config"]
