"""What defines a trained LLM: GPT-2's shape, the prefix, what it reads, its data and its training."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmimg.core.config import Profile, get_profile
from llmimg.core.training import StageConfig, TrainConfig

STAGE = "llm"
FORMAT = 2  # bump when a change to this stage's code changes what a trained LLM is
RETRAIN = "llmimg train llm --force"
TASKS: tuple[str, ...] = ("upsample", "caption")
MAX_TRIES = 16  # draws per prompt before the upsampler gives up on a faithful description (see upsample_from)


@dataclass(frozen=True)
class LLMConfig(StageConfig):
    """Everything that determines a trained LLM (on top of the CLIP it is trained with, its upstream stage).

    ``read_context``: GPT-2 reads the prompt's tokens (upsampling) or CLIP's image patch
    tokens (captioning) beside the prefix; ``prompt_order``: upsampling targets name the
    objects in the prompt's order (see :mod:`llmimg.stages.llm`); ``caption_rate``: the
    share of training examples that are captioning (the rest upsampling).
    """

    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    prefix_length: int = 4
    mapper_hidden: int = 256
    read_context: bool = True
    prompt_order: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=64, lr=1e-3))
    n_train: int = 20_000
    caption_rate: float = 0.5
    seed: int = 0


def default_config(profile: str | Profile | None = None) -> LLMConfig:
    """The LLM each profile trains (on top of that profile's CLIP)."""
    p = get_profile(profile)
    return LLMConfig(
        n_embd=p.size("llm.n_embd"), n_layer=p.size("llm.n_layer"), n_head=p.size("llm.n_head"),
        mapper_hidden=p.size("llm.mapper_hidden"),
        train=TrainConfig(steps=p.size("llm.steps"), batch_size=p.size("llm.batch_size"), lr=p.size("llm.lr"),
                          warmup_steps=p.size("llm.warmup_steps")),
        n_train=p.size("llm.n_train"),
    )


__all__ = ["FORMAT", "LLMConfig", "MAX_TRIES", "RETRAIN", "STAGE", "TASKS", "default_config"]
