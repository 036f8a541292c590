"""One training loop for every stage, on HF ``accelerate``, with resumable checkpoints.

:func:`fit` runs the same code on a CPU, one GPU or several (``accelerate launch``),
in bf16 where the GPU supports it. A stage hands it a model, a ``batch(step)``
function and a ``loss(model, batch)`` function; :func:`fit` owns the optimiser
(AdamW), the learning-rate schedule (warm-up then cosine), gradient clipping, the
progress bar with the live loss, the loss history and the checkpoints.

**Resuming.** Every ``checkpoint_every`` steps, and when interrupted (Ctrl-C), the
model, the optimiser, torch's random-number state, the history and the evaluations go
to ``work_dir`` as safetensors and JSON, written atomically with a checksum of each
file; a later call with the same ``work_dir`` continues from there. Batches are a pure
function of the step, and an optimiser step is applied and recorded whole (a Ctrl-C
waits for it), so a resumed run ends bit-identical to an uninterrupted one wherever the
interrupt landed. A checkpoint that is damaged (a file changed since it was written, a
state of the wrong shape, weights that are not finite) is refused with a
:class:`~llmimg.core.store.CheckpointError`, never resumed into a different model.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmimg.core import seeding
from llmimg.core.config import show_progress
from llmimg.core.folders import check_records, file_records, verify_files, writing
from llmimg.core.store import CheckpointError, atomic_directory, load_tensors, save_tensors

TRAIN_STATE = "trainer_state.json"
STATE_CHECKSUMS = "checksums.json"  # size and SHA-256 of the other files of a checkpoint, written last


def cadence(default: int) -> Any:
    """A config field that says how often something is logged or measured, not what the model is.

    Such fields are left out of :meth:`StageConfig.identity`, so changing one never
    retrains a cached model.
    """
    return field(default=default, metadata={"identity": False})


def identity(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that define the trained model, as plain JSON values (nested configs too)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        # A field added later with metadata "omit_default" keeps the keys of models trained before it existed.
        if f.metadata.get("identity", True) and not (f.metadata.get("omit_default") and value == f.default):
            out[f.name] = identity(value) if is_dataclass(value) else value
    return json.loads(json.dumps(out))


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast a stage trains (the model's own shape lives in its config)."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    checkpoint_every: int = cadence(200)
    log_every: int = cadence(10)
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
        """Plain JSON values (tuples as lists): the form stored in manifests."""
        return json.loads(json.dumps(asdict(self)))

    def identity(self) -> dict[str, Any]:
        """What defines the trained model (the cache key hashes it): every field but the :func:`cadence` ones."""
        return identity(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The inverse of :meth:`as_dict`, checked against the dataclass: a saved config is never completed silently.

        A field that defines the model missing, a field the class does not have, or a
        value of the wrong type raises ``ValueError`` naming it; only the :func:`cadence`
        fields (how often something is logged) and the fields added later with metadata
        ``omit_default`` (a model saved before them had their default) may be missing and
        take their defaults.
        """
        return cls(**checked_fields(cls, d))


def checked_fields(cls: type, d: Any, where: str = "") -> dict[str, Any]:
    """The keyword arguments of the config dataclass ``cls`` in ``d`` (nested configs built too), checked.

    See :meth:`StageConfig.from_dict`; ``where`` prefixes field names in messages.
    """
    import typing

    label = f"{where}." if where else ""
    if not isinstance(d, dict):
        raise ValueError(f"the config{' ' + where if where else ''} is not a mapping of fields, got "
                         f"{type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(repr(label + k) for k in unknown)}")
    # An "omit_default" field (added later) may be missing: a model saved before it existed had its default.
    missing = sorted(name for name, f in known.items() if name not in d and f.metadata.get("identity", True)
                     and not f.metadata.get("omit_default"))
    if missing:
        raise ValueError(f"the config lacks {', '.join(repr(label + k) for k in missing)}, which define the model")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in d.items():
        kind = hints[name]
        if is_dataclass(kind):
            out[name] = kind(**checked_fields(kind, value, label + name))
        elif not _has_type(value, kind):
            raise ValueError(f"the config's {label + name!r} is {value!r}, not a {getattr(kind, '__name__', kind)}")
        else:
            out[name] = value
    return out


def _has_type(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits the annotation ``kind`` (a tuple may come as a list; an int fits a float)."""
    import types
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arm) for arm in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        arm = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_has_type(v, arm) for v in value)
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    return True  # Any and the like


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0.1 at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_accelerator(device: str | torch.device | None = None):
    """An ``accelerate.Accelerator`` on the chosen device, bf16 where the GPU supports it."""
    from accelerate import Accelerator

    from llmimg.core.config import get_device

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


def _save_state(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: _Progress,
                meta: dict) -> None:
    with writing(work_dir, "the training checkpoint"), atomic_directory(work_dir) as tmp:
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        opt_tensors, opt_meta = _optimizer_to_tensors(optimizer)
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        save_tensors(progress.rng, tmp / "rng.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        (tmp / TRAIN_STATE).write_text(json.dumps({**progress.as_json(), "meta": meta}), encoding="utf-8")
        (tmp / STATE_CHECKSUMS).write_text(json.dumps(file_records(tmp)), encoding="utf-8")


# The shape of trainer_state.json: each field and the types it may hold.
_STATE_FIELDS = {"step": (int,), "observed": (int,), "history": (list,), "running": (list,), "evaluations": (list,),
                 "train_seconds": (int, float), "meta": (dict,)}


def _load_state(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict,
                steps: int) -> _Progress | None:
    """An interrupted run's progress in ``work_dir``, its weights and optimiser loaded; ``None`` if another run's.

    Its files are checked against their checksums (a checkpoint written before they
    were recorded has none), its state against its shape and ``steps``, and its tensors
    for numbers that are not finite; any damage is a :class:`CheckpointError`.
    """
    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"cannot resume from the interrupted run in {work_dir.name!r}: {why}; delete that "
                               "folder to train from the start")

    try:
        if (work_dir / STATE_CHECKSUMS).is_file():
            records = json.loads((work_dir / STATE_CHECKSUMS).read_text(encoding="utf-8"))
            problem = check_records(records) or verify_files(work_dir, records)
            if problem:
                raise damaged(problem)
        saved = json.loads((work_dir / TRAIN_STATE).read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise damaged(f"{TRAIN_STATE} is not a mapping")
        for name, kinds in _STATE_FIELDS.items():
            if not isinstance(saved.get(name), kinds) or isinstance(saved.get(name), bool):
                raise damaged(f"{TRAIN_STATE} has no {name!r} of the right type")
        if saved["meta"] != meta:
            return None  # a different run's leftovers: start over rather than mix two runs
        if not 0 <= saved["observed"] <= saved["step"] <= steps:
            raise damaged(f"{TRAIN_STATE} says step {saved['step']} (observed {saved['observed']}) of {steps}")
        weights = load_tensors(work_dir / "model.safetensors")
        opt_tensors = load_tensors(work_dir / "optimizer.safetensors")
        for name, tensors in (("model.safetensors", weights), ("optimizer.safetensors", opt_tensors)):
            if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
                raise damaged(f"{name} holds numbers that are not finite")
        model.load_state_dict(weights)
        opt_meta = json.loads((work_dir / "optimizer.json").read_text(encoding="utf-8"))
        optimizer.load_state_dict(_optimizer_from_tensors(opt_tensors, opt_meta))
        rng = load_tensors(work_dir / "rng.safetensors")
        now = torch.get_rng_state()
        if "cpu" not in rng or rng["cpu"].dtype != now.dtype or rng["cpu"].shape != now.shape:
            raise damaged("rng.safetensors holds no random-number state of this torch")
        return _Progress(step=saved["step"], observed=saved["observed"], history=saved["history"],
                         running=saved["running"], evaluations=saved["evaluations"],
                         train_seconds=float(saved["train_seconds"]), rng=rng)
    except CheckpointError as err:
        if str(err).startswith("cannot resume"):
            raise
        raise damaged(str(err)) from err
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as err:
        raise damaged(f"{type(err).__name__}: {err}") from err


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in state]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)


@dataclass
class _Progress:
    """Everything a resumed run needs besides the weights and the optimiser.

    ``step`` optimiser steps are applied; ``on_step`` has finished for steps up to
    ``observed`` (``step - 1`` when an interrupt landed inside it, so it runs again on
    resume). ``running`` holds the losses since the last history entry and ``rng`` the
    random-number state right after step ``step`` (or after its ``on_step``), so that
    dropout and anything else drawing from torch's generators continue as they would have.
    """

    step: int = 0
    observed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    rng: dict[str, torch.Tensor] = field(default_factory=_rng_state)

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "observed": self.observed, "history": self.history, "running": self.running,
                "evaluations": self.evaluations, "train_seconds": self.train_seconds}


@contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends, so that an optimiser step and its bookkeeping happen whole or not at all.

    Only the main thread receives signals (and may set handlers); elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])  # the usual handler: raises KeyboardInterrupt (Jupyter's does the same)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


@dataclass
class TrainResult:
    """What :func:`fit` leaves behind: the trained model (unwrapped, on the CPU), its loss history and evaluations.

    ``evaluations`` are the dicts ``on_step`` returned, each with its ``step`` and the
    ``train_seconds`` spent in optimiser steps until then (evaluating is not counted);
    ``seconds`` is that time for the whole run, resumed parts included.
    """

    model: nn.Module
    history: list[dict[str, float]]
    resumed_from: int
    seconds: float
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A batch with its tensors moved to ``device`` (anything else kept as it is)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def fit(model: nn.Module, batch: Callable[[int], dict[str, Any]],
        loss: Callable[[nn.Module, dict[str, Any]], torch.Tensor], config: TrainConfig, *,
        work_dir: str | Path | None = None, desc: str = "training", device: str | torch.device | None = None,
        progress: bool = True, meta: dict | None = None,
        on_step: Callable[[int, nn.Module], dict[str, Any] | None] | None = None,
        log: Callable[[nn.Module], dict[str, float]] | None = None) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimiser steps and return it with its history.

    ``batch(i)`` returns the ``i``-th batch as a dict of CPU tensors (and anything
    else ``loss`` needs); with several processes, process ``p`` of ``n`` takes batches
    ``i * n + p``. ``loss(model, batch)`` returns a scalar tensor. ``meta`` (e.g. the
    stage's configuration) is stored with checkpoints; a checkpoint whose ``meta``
    differs is not resumed. Without ``work_dir`` nothing is written. ``on_step(n, model)``
    runs after optimiser step ``n`` (1-based) on the main process, e.g. to evaluate the
    model along the way (it should leave the model in training mode); what it returns,
    if not ``None``, is kept in :attr:`TrainResult.evaluations` and survives a resume.

    ``log(model)`` runs on logged steps after the backward pass, before clipping: what
    it returns (e.g. each part's gradient norm) joins that step's history entry.

    An interrupted run (Ctrl-C anywhere, even inside ``on_step``) that is resumed ends
    bit-identical to an uninterrupted one, with the same history and evaluations.
    """
    # Dropout and anything else drawing from torch's global generator draw from the rule's
    # "train" stream here; the caller's random state is given back afterwards.
    with seeding.isolated(config.seed, "train"):
        return _fit(model, batch, loss, config, work_dir=work_dir, desc=desc, device=device, progress=progress,
                    meta=meta, on_step=on_step, log=log)


def _fit(model: nn.Module, batch: Callable[[int], dict[str, Any]],
         loss: Callable[[nn.Module, dict[str, Any]], torch.Tensor], config: TrainConfig, *,
         work_dir: str | Path | None, desc: str, device: str | torch.device | None, progress: bool,
         meta: dict | None, on_step: Callable[[int, nn.Module], dict[str, Any] | None] | None,
         log: Callable[[nn.Module], dict[str, float]] | None) -> TrainResult:
    from tqdm.auto import tqdm

    accelerator = make_accelerator(device)
    meta = {"train": identity(config), **(meta or {})}
    # A model that trains several models may name them (optimizer_groups: name -> (parameters, lr factor)):
    # each then gets its own learning rate and its own gradient clipping, so one cannot starve the other.
    named = model.optimizer_groups() if hasattr(model, "optimizer_groups") else {"all": (model.parameters(), 1.0)}
    groups, clipped = [], []
    for params, factor in named.values():
        trainable = [p for p in params if p.requires_grad]
        clipped.append(trainable)
        for decayed in (True, False):  # biases and norms are not decayed
            chosen = [p for p in trainable if (p.ndim >= 2) == decayed]
            if chosen:
                groups.append({"params": chosen, "weight_decay": config.weight_decay if decayed else 0.0,
                               "initial_lr": config.lr * factor})
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    work_dir = Path(work_dir) if work_dir is not None else None
    state = None
    if work_dir is not None and (work_dir / TRAIN_STATE).is_file():
        state = _load_state(work_dir, model, optimizer, meta, config.steps)
    if state is None:
        state = _Progress()
    _set_rng_state(state.rng)
    start = state.step
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps), last_epoch=start - 1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def checkpoint() -> None:
        if work_dir is not None and accelerator.is_main_process:
            _save_state(work_dir, accelerator.unwrap_model(model), optimizer, state, meta)

    def observe() -> None:
        """Run ``on_step`` for the last step applied, once."""
        record = None
        if on_step is not None and accelerator.is_main_process and state.observed < state.step:
            record = on_step(state.step, accelerator.unwrap_model(model))
        with _interrupt_deferred():
            if record is not None:
                state.evaluations.append({"step": state.step, "train_seconds": state.train_seconds, **record})
            state.observed, state.rng = state.step, _rng_state()

    bar = tqdm(total=config.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True,
               disable=not (show_progress(progress) and accelerator.is_local_main_process))
    if state.running:
        bar.set_postfix(loss=f"{sum(state.running) / len(state.running):.4f}")
    try:
        observe()  # an interrupt inside on_step left it unfinished for the step it was given
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            b = to_device(batch(step * accelerator.num_processes + accelerator.process_index), accelerator.device)
            with accelerator.autocast():
                value = loss(model, b)
            if not torch.isfinite(value):
                resumed = (f" (the run resumed from {str(work_dir)!r} at step {start}: if that state is damaged, "
                           "delete the folder)" if start else "")
                raise FloatingPointError(f"{desc}: the loss became {value.item()} at step {step}; "
                                         f"lower the learning rate{resumed}")
            accelerator.backward(value)
            logged = step + 1 == config.steps or (step + 1) % config.log_every == 0
            extra = log(accelerator.unwrap_model(model)) if log is not None and logged else {}
            if config.grad_clip:
                for params in clipped:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
            # From here to the end of the block the step is applied and recorded whole: a Ctrl-C
            # waits, so the saved state is never "weights of step n labelled n - 1".
            with _interrupt_deferred():
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.running.append(value.item())
                if logged:
                    mean = sum(state.running) / len(state.running)
                    state.history.append({"step": step + 1, "loss": mean, "lr": scheduler.get_last_lr()[0], **extra})
                    bar.set_postfix(loss=f"{mean:.4f}")
                    state.running = []
                state.train_seconds += time.perf_counter() - t0
                state.step, state.rng = step + 1, _rng_state()
            bar.update(1)
            observe()
            if state.step % config.checkpoint_every == 0 and state.step < config.steps:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()  # everything applied so far is kept; an unfinished step is lost whole
        raise
    finally:
        bar.close()
    trained = accelerator.unwrap_model(model).to("cpu").eval()
    accelerator.free_memory()
    return TrainResult(trained, state.history, start, state.train_seconds, state.evaluations)
