"""One regime's fine-tuning: the regimes, their loss weights and the budget (equal compute for every regime)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llmimg.core.config import Profile, get_profile
from llmimg.core.training import StageConfig, TrainConfig

STAGE = "joint"
START_STAGE = "joint-start"
FORMAT = 2  # bump when a change to this package's code changes what a trained regime is
REGIMES = ("separate", "sequential", "joint", "cycle", "reward")
# What each regime trains: the UNet, the GPT-2 body the generator reads, the LLM (its own body included).
TRAINS = {"separate": ("unet", "text", "lm"), "sequential": ("unet",), "joint": ("unet", "text", "lm"),
          "cycle": ("unet", "text", "lm"), "reward": ("lm",)}
METRICS = ("all_correct", "heldout_all_correct", "caption_accuracy", "faithfulness")
WEIGHTS = "model.safetensors"


def check_regime(regime: Any) -> str:
    """``regime`` if it is one of :data:`REGIMES`, else a clear error."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    return regime


@dataclass(frozen=True)
class JointConfig(StageConfig):
    """One regime's fine-tuning: the regime, its loss weights and the training budget.

    ``lam`` is λ, the weight of the LLM's loss in ``joint``, ``cycle`` and ``reward`` (``separate``
    trains the LLM on its own loss at weight 1: apart, a weight only rescales it).
    ``cycle_weight`` is μ; the cycle uses rows whose timestep is below ``cycle_max_t``
    of the schedule, where x̂₀ is still an image. ``reward_steps`` are the denoising
    steps of the reward's images.
    """

    regime: str = "joint"
    lam: float = 1.0
    cycle_weight: float = 1.0
    cycle_max_t: float = 0.5
    caption_rate: float = 0.5
    reward_steps: int = 4
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, batch_size=32, lr=3e-4,
                                                                   warmup_steps=20))

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        check_regime(self.regime)
        for name in ("lam", "cycle_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a non-negative number (0 switches its term off), got {value!r}")
        if not 0 < self.cycle_max_t <= 1 or not 0 <= self.caption_rate <= 1:
            raise ValueError(f"cycle_max_t must be in (0, 1] and caption_rate in [0, 1], got "
                             f"{self.cycle_max_t}, {self.caption_rate}")
        if self.reward_steps < 1:
            raise ValueError(f"reward_steps must be at least 1, got {self.reward_steps}")


def default_config(profile: str | Profile | None = None, regime: str = "joint", **changes: Any) -> JointConfig:
    """The profile's budget for ``regime``: smoke 6 steps of 8; default 300 steps of 32; full 3,000 of 128."""
    p = get_profile(profile)
    train = TrainConfig(steps=p.size("joint.steps"), batch_size=p.size("joint.batch_size"), lr=3e-4,
                        warmup_steps=p.size("joint.warmup_steps"), log_every=p.size("joint.log_every"),
                        checkpoint_every=p.size("joint.checkpoint_every"))
    return JointConfig(regime=check_regime(regime), train=train, **changes)


__all__ = ["FORMAT", "METRICS", "REGIMES", "STAGE", "START_STAGE", "TRAINS", "WEIGHTS", "JointConfig", "check_regime",
           "default_config"]
