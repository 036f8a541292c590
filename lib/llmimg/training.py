"""One training loop for every stage, on HF ``accelerate``, with resumable checkpoints.

:func:`fit` runs the same code on a CPU, one GPU or several (``accelerate launch``),
in bf16 where the GPU supports it. A stage hands it a model, a ``batch(step)``
function and a ``loss(model, batch)`` function; :func:`fit` owns the optimiser
(AdamW), the learning-rate schedule (warm-up then cosine), gradient clipping, the
progress bar with the live loss, the loss history and the checkpoints.

**Resuming.** Every ``checkpoint_every`` steps, and when interrupted (Ctrl-C), the
model, the optimiser and the history go to ``work_dir`` as safetensors and JSON,
written atomically; a later call with the same ``work_dir`` continues from there.
Batches are a pure function of the step, so a resumed run sees the batches an
uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmimg.checkpoints import CheckpointError, atomic_directory, load_tensors, save_tensors

TRAIN_STATE = "trainer_state.json"


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast a stage trains (the model's own shape lives in its config)."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageConfig:
    """Shared by the stages' frozen configuration dataclasses, which hold a ``train: TrainConfig`` field."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists): the form stored in manifests and hashed into cache keys."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The inverse of :meth:`as_dict`."""
        return cls(**{**d, "train": TrainConfig(**d["train"])})


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0.1 at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_accelerator(device: str | torch.device | None = None):
    """An ``accelerate.Accelerator`` on the chosen device, bf16 where the GPU supports it."""
    from accelerate import Accelerator

    from llmimg.config import get_device

    device = get_device(device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if bf16 else "no")


# -- optimiser state as safetensors + JSON (no pickle anywhere) -------------------------
def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_state(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                step: int, history: list[dict], meta: dict) -> None:
    with atomic_directory(work_dir) as tmp:
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        opt_tensors, opt_meta = _optimizer_to_tensors(optimizer)
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        (tmp / TRAIN_STATE).write_text(json.dumps({"step": step, "history": history, "meta": meta}),
                                       encoding="utf-8")


def _load_state(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                meta: dict) -> tuple[int, list[dict]]:
    try:
        saved = json.loads((work_dir / TRAIN_STATE).read_text(encoding="utf-8"))
        if saved["meta"] != meta:
            return 0, []  # a different run's leftovers: start over rather than mix two runs
        model.load_state_dict(load_tensors(work_dir / "model.safetensors"))
        opt_meta = json.loads((work_dir / "optimizer.json").read_text(encoding="utf-8"))
        optimizer.load_state_dict(_optimizer_from_tensors(load_tensors(work_dir / "optimizer.safetensors"),
                                                          opt_meta))
    except (OSError, KeyError, ValueError, RuntimeError, CheckpointError) as err:
        raise CheckpointError(
            f"cannot resume from the interrupted run in {work_dir.name!r} ({err}); delete that "
            "folder to train from the start") from err
    return int(saved["step"]), list(saved["history"])


@dataclass
class TrainResult:
    """What :func:`fit` leaves behind: the trained model (unwrapped, on the CPU) and the loss history."""

    model: nn.Module
    history: list[dict[str, float]]
    resumed_from: int
    seconds: float


def fit(model: nn.Module, batch: Callable[[int], dict[str, Any]],
        loss: Callable[[nn.Module, dict[str, Any]], torch.Tensor], config: TrainConfig, *,
        work_dir: str | Path | None = None, desc: str = "training", device: str | torch.device | None = None,
        progress: bool = True, meta: dict | None = None,
        on_step: Callable[[int, nn.Module], None] | None = None) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimiser steps and return it with its history.

    ``batch(i)`` returns the ``i``-th batch as a dict of CPU tensors (and anything
    else ``loss`` needs); with several processes, process ``p`` of ``n`` takes batches
    ``i * n + p``. ``loss(model, batch)`` returns a scalar tensor. ``meta`` (e.g. the
    stage's configuration) is stored with checkpoints; a checkpoint whose ``meta``
    differs is not resumed. Without ``work_dir`` nothing is written. ``on_step(n, model)``
    runs after optimiser step ``n`` (1-based) on the main process, e.g. to evaluate the
    model along the way (it should leave the model in training mode).
    """
    from tqdm.auto import tqdm

    accelerator = make_accelerator(device)
    meta = {"train": config.as_dict(), **(meta or {})}
    torch.manual_seed(config.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]  # biases and norms are not decayed
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    work_dir = Path(work_dir) if work_dir is not None else None
    start, history = 0, []
    if work_dir is not None and (work_dir / TRAIN_STATE).is_file():
        start, history = _load_state(work_dir, model, optimizer, meta)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps), last_epoch=start - 1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def to_device(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(accelerator.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in b.items()}

    def checkpoint(step: int) -> None:
        if work_dir is not None and accelerator.is_main_process:
            _save_state(work_dir, accelerator.unwrap_model(model), optimizer, step, history, meta)

    bar = tqdm(total=config.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))
    t0, step, running = time.perf_counter(), start, []
    try:
        for step in range(start, config.steps):
            b = to_device(batch(step * accelerator.num_processes + accelerator.process_index))
            with accelerator.autocast():
                value = loss(model, b)
            if not torch.isfinite(value):
                raise FloatingPointError(f"{desc}: the loss became {value.item()} at step {step}; "
                                         "lower the learning rate")
            accelerator.backward(value)
            if config.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running.append(value.item())
            if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                mean = sum(running) / len(running)
                history.append({"step": step + 1, "loss": mean, "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{mean:.4f}")
                running = []
            bar.update(1)
            if on_step is not None and accelerator.is_main_process:
                on_step(step + 1, accelerator.unwrap_model(model))
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                checkpoint(step + 1)
    except KeyboardInterrupt:
        checkpoint(step)  # the step in flight is lost, everything before it is kept
        raise
    finally:
        bar.close()
    trained = accelerator.unwrap_model(model).to("cpu").eval()
    accelerator.free_memory()
    return TrainResult(trained, history, start, time.perf_counter() - t0)
