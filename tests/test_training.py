"""The shared training loop and the checkpoint helpers: loss falls, resuming is exact, failures lose nothing."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from llmimg.core import seeding
from llmimg.core.store import (CheckpointError, Manifest, atomic_directory, cache_key, cached, folder_name, load_tensors,
                               read_manifest, require_folder, save_tensors, write_manifest)
from llmimg.core.training import TrainConfig, _optimizer_from_tensors, _optimizer_to_tensors, fit, lr_factor

TRUE_W = torch.tensor([[1.5, -2.0, 0.5]])


def batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 3, generator=g)
    return {"x": x, "y": x @ TRUE_W.T + 0.3}


def loss(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(b["x"]), b["y"])


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 1)


CONFIG = TrainConfig(steps=80, batch_size=16, lr=0.2, weight_decay=0.0, warmup_steps=3, checkpoint_every=10, log_every=10)


def test_lr_schedule():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100) == pytest.approx(0.1)


def test_loss_falls_and_history_is_kept():
    result = fit(fresh_model(), batch, loss, CONFIG, progress=False)
    losses = [h["loss"] for h in result.history]
    assert [h["step"] for h in result.history] == list(range(10, 81, 10))
    assert losses[-1] < 0.1 * losses[0]
    assert torch.allclose(result.model.weight, TRUE_W, atol=0.2)


class TwoModels(nn.Module):
    """Two linear models trained together, each with its own learning rate (optimizer_groups)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.factor = nn.Linear(3, 1), nn.Linear(3, 1), factor

    def optimizer_groups(self):
        return {"a": (self.a.parameters(), 1.0), "b": (self.b.parameters(), self.factor)}

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_named_optimizer_groups_get_their_own_learning_rate_and_clipping():
    """A model that names its parts trains each at lr x its factor (factor 0 leaves it where it was), and each
    part is clipped on its own: a part with a huge gradient cannot shrink the other's step."""
    config = TrainConfig(steps=20, batch_size=16, lr=0.1, weight_decay=0.0, warmup_steps=0, log_every=5, grad_clip=1.0)
    frozen = fit(TwoModels(0.0), batch, loss, config, progress=False).model
    assert torch.equal(frozen.b.weight, TwoModels(0.0).b.weight) and not torch.equal(frozen.a.weight,
                                                                                      TwoModels(0.0).a.weight)
    seen = []

    def huge_b(model, b):  # clipped together with b's, a's gradient would fall below Adam's epsilon
        seen.append(None)
        return loss(model, b) + 1e12 * model.b(b["x"]).sum()

    apart = fit(TwoModels(1.0), batch, huge_b, replace(config, steps=1, lr=1.0), progress=False).model
    moved = (apart.a.weight - TwoModels(1.0).a.weight).abs().max()
    assert seen and moved > 0.5  # Adam's first step: about lr = 1 on every weight whose gradient is not ~0


def test_training_leaves_the_callers_random_state_alone():
    """fit draws dropout and the like from its own stream (seeding.isolated), then gives the global state back."""
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(nn.functional.dropout(x, 0.5, self.training))

    def make() -> Noisy:
        with seeding.isolated(0, "init"):
            return Noisy()

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = fit(make(), batch, loss, CONFIG, progress=False).history
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # another global state: the same run, since fit never reads it
    assert fit(make(), batch, loss, CONFIG, progress=False).history == first


def test_bad_training_config():
    with pytest.raises(ValueError, match="steps must be positive"):
        TrainConfig(steps=0, batch_size=4)
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(steps=1, batch_size=4, lr=0)


def test_diverging_loss_stops_with_a_clear_error():
    def nan_loss(model, b):
        return model(b["x"]).sum() * float("nan")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(fresh_model(), batch, nan_loss, CONFIG, progress=False)


def test_interrupted_training_resumes_exactly(tmp_path):
    straight = fit(fresh_model(), batch, loss, CONFIG, progress=False).model

    def interrupted_batch(step):
        if step == 17:
            raise KeyboardInterrupt
        return batch(step)
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), interrupted_batch, loss, CONFIG, work_dir=tmp_path, progress=False)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["step"] == 17
    resumed = fit(fresh_model(), batch, loss, CONFIG, work_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 17
    assert torch.allclose(resumed.model.weight, straight.weight, atol=1e-6)
    assert torch.allclose(resumed.model.bias, straight.bias, atol=1e-6)


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Dropout(0.3), nn.Linear(3, 1))  # dropout draws from torch's global generator


SHORT = TrainConfig(steps=20, batch_size=16, lr=0.2, weight_decay=0.0, warmup_steps=3, checkpoint_every=5, log_every=3)


def evaluate(step: int, model: nn.Module) -> dict[str, float] | None:
    """An on_step that records something every 4 steps and draws random numbers, as a sampler would."""
    return {"noise": torch.rand(()).item(), "bias": model[1].bias.item()} if step % 4 == 0 else None


def interrupting(where: str, at: int, monkeypatch):
    """``(batch, loss, on_step)`` for :func:`fit` that raise KeyboardInterrupt at step ``at`` in ``where``."""
    def batch_fn(step):
        if where == "batch" and step == at - 1:
            raise KeyboardInterrupt
        return batch(step)

    def loss_fn(model, b):
        value = loss(model, b)
        if where == "loss" and model[1].weight.grad is None and batch_fn.calls == at - 1:
            raise KeyboardInterrupt
        batch_fn.calls += 1
        return value
    batch_fn.calls = 0

    def on_step(step, model):
        record = evaluate(step, model)
        if where == "on_step" and step == at:
            raise KeyboardInterrupt  # after the optimiser step: its weights already hold step `at`
        return record

    if where == "signal":  # a real Ctrl-C arriving while the optimiser step is being applied
        import os
        import signal

        from llmimg.core import training
        real = training.lr_factor

        def lr_and_signal(step, warmup, total):
            if step == at:
                os.kill(os.getpid(), signal.SIGINT)
            return real(step, warmup, total)
        monkeypatch.setattr(training, "lr_factor", lr_and_signal)
    return batch_fn, loss_fn, on_step


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, even where the tests were started with SIGINT ignored (as a background job)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("where", ["batch", "loss", "on_step", "signal"])
def test_resume_is_bit_identical_wherever_the_interrupt_lands(where, tmp_path, monkeypatch, python_ctrl_c):
    straight = fit(dropout_model(), batch, loss, SHORT, progress=False, on_step=evaluate)
    batch_fn, loss_fn, on_step = interrupting(where, 13, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fit(dropout_model(), batch_fn, loss_fn, SHORT, work_dir=tmp_path, progress=False, on_step=on_step)
    monkeypatch.undo()
    resumed = fit(dropout_model(), batch, loss, SHORT, work_dir=tmp_path, progress=False, on_step=evaluate)
    assert resumed.resumed_from == (12 if where in ("batch", "loss") else 13)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.history == straight.history  # losses since the last log entry were kept too

    def without_times(evaluations):
        return [{k: v for k, v in e.items() if k != "train_seconds"} for e in evaluations]
    assert without_times(resumed.evaluations) == without_times(straight.evaluations)
    assert [e["step"] for e in resumed.evaluations] == [4, 8, 12, 16, 20]


def test_a_different_run_is_not_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if s == 12 else batch(s), loss,
            CONFIG, work_dir=tmp_path, progress=False, meta={"run": "a"})
    result = fit(fresh_model(), batch, loss, CONFIG, work_dir=tmp_path, progress=False, meta={"run": "b"})
    assert result.resumed_from == 0


def test_damaged_resume_state_is_a_clear_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if s == 12 else batch(s), loss,
            CONFIG, work_dir=tmp_path, progress=False)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="delete that folder"):
        fit(fresh_model(), batch, loss, CONFIG, work_dir=tmp_path, progress=False)


def interrupted_at_12(work_dir) -> None:
    """A run interrupted after 12 steps, its state saved in ``work_dir`` (step 12's, not the checkpoint of 10)."""
    with pytest.raises(KeyboardInterrupt):
        fit(fresh_model(), lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if s == 12 else batch(s), loss,
            CONFIG, work_dir=work_dir, progress=False)


def test_changed_weights_in_resume_state_are_refused_not_trained_on(tmp_path):
    """A valid safetensors file whose numbers changed would resume into a different model: its checksum says no."""
    interrupted_at_12(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # the last float becomes 1.0: still a valid file
    weights.write_bytes(bytes(data))
    assert load_tensors(weights)  # it loads
    with pytest.raises(CheckpointError, match="cannot resume .*: model.safetensors is not the file that was saved.*"
                                              "delete"):
        fit(fresh_model(), batch, loss, CONFIG, work_dir=tmp_path, progress=False)


def test_resume_state_without_checksums_is_still_checked(tmp_path):
    """A state saved before checksums were recorded resumes; numbers that are not finite are refused, not reported
    as a diverging loss."""
    old, nan = tmp_path / "old", tmp_path / "nan"
    for folder in (old, nan):
        interrupted_at_12(folder)
        (folder / "checksums.json").unlink(missing_ok=True)
    assert fit(fresh_model(), batch, loss, CONFIG, work_dir=old, progress=False).resumed_from == 12
    tensors = load_tensors(nan / "model.safetensors")
    save_tensors({k: torch.full_like(v, float("nan")) for k, v in tensors.items()}, nan / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors holds numbers that are not finite; delete"):
        fit(fresh_model(), batch, loss, CONFIG, work_dir=nan, progress=False)


@pytest.mark.parametrize("state, message", [
    ([], "is not a mapping"),
    ({"step": "twelve"}, "no 'step' of the right type"),
    ("steps beyond the run", "says step 500"),
])
def test_resume_state_of_the_wrong_shape_is_refused(tmp_path, state, message):
    interrupted_at_12(tmp_path)
    (tmp_path / "checksums.json").unlink(missing_ok=True)  # as if saved before checksums: the shape itself is checked
    path = tmp_path / "trainer_state.json"
    saved = json.loads(path.read_text())
    if state == "steps beyond the run":
        state = {**saved, "step": 500, "observed": 500}
    elif isinstance(state, dict):
        state = {**saved, **state}
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=f"cannot resume .*{message}.*delete that folder"):
        fit(fresh_model(), batch, loss, CONFIG, work_dir=tmp_path, progress=False)


def test_optimizer_state_round_trips_without_pickle():
    model = fresh_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    loss(model, batch(0)).backward()
    opt.step()
    tensors, meta = _optimizer_to_tensors(opt)
    json.dumps(meta)  # everything that is not a tensor is JSON
    restored = _optimizer_from_tensors(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(fresh_model().parameters(), lr=0.1)
    opt2.load_state_dict(restored)
    for a, b in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])


def test_atomic_directory_replaces_on_success_and_keeps_old_on_error(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("crash while saving")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def test_tensors_round_trip_and_damage_is_detected(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(tensors, tmp_path / "t.safetensors")
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert all(torch.equal(tensors[k], loaded[k]) for k in tensors)
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_tensors(tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        load_tensors(tmp_path / "none.safetensors")


def test_require_folder_messages(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*llmimg train clip"):
        require_folder(tmp_path / "nope", ["x"], "a CLIP checkpoint", "llmimg train clip")
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is a file"):
        require_folder(tmp_path / "file", ["x"], "a CLIP checkpoint", "llmimg train clip")
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="x, y missing"):
        require_folder(tmp_path / "d", ["x", "y"], "a CLIP checkpoint", "llmimg train clip")


def test_cached_builds_once_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    calls = []

    def build(out, work):
        calls.append(out)
        (out / "weights.txt").write_text("w")
        write_manifest(out, Manifest("toy", 1, {"a": 1}))

    key = cache_key("toy", 1, {"a": 1})
    first = cached(key, build, profile="smoke")
    second = cached(key, build, profile="smoke")
    assert first == second == tmp_path / "smoke" / folder_name(key) and len(calls) == 1
    # the manifest records what the save wrote: each file's size and SHA-256 (computed here independently)
    assert read_manifest(first, "toy") == Manifest("toy", 1, {"a": 1}, files={
        "weights.txt": {"size": 1, "sha256": hashlib.sha256(b"w").hexdigest()}})
    cached(key, build, profile="smoke", force=True)
    assert len(calls) == 2
    assert folder_name(cache_key("toy", 1, {"a": 2})) != folder_name(key)
    assert folder_name(cache_key("toy", 2, {"a": 1})) != folder_name(key)  # a new format is a new model
    assert folder_name(cache_key("toy", 1, {"a": 1}, {"clip": "clip-0"})) != folder_name(key)  # so is new upstream

    def failing(out, work):
        (out / "half.txt").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        cached(cache_key("toy", 1, {"a": 3}), failing, profile="smoke")
    assert not (tmp_path / "smoke" / folder_name(cache_key("toy", 1, {"a": 3}))).exists()

    def no_manifest(out, work):
        (out / "weights.txt").write_text("w")
    with pytest.raises(RuntimeError, match="wrote no llmimg.json"):
        cached(cache_key("toy", 1, {"a": 4}), no_manifest, profile="smoke")
    assert not [p for p in (tmp_path / "smoke").iterdir() if p.name.startswith(".") and p.suffix != ".lock"]


def _two_process_run():
    from accelerate import PartialState

    result = fit(fresh_model(), batch, loss, CONFIG, progress=False, device="cpu")
    state = PartialState()
    assert state.num_processes == 2
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.1 * losses[0]
    # DDP keeps the replicas identical: every process ends with the same weights
    weights = result.model.weight.detach().clone()
    gathered = [torch.zeros_like(weights) for _ in range(2)]
    torch.distributed.all_gather(gathered, weights)
    assert torch.equal(gathered[0], gathered[1])


def test_the_same_loop_runs_on_two_processes():
    """What `accelerate launch --num_processes 2` does, on the CPU (gloo): the loop needs no change.

    It runs in a fresh interpreter: accelerate's process state is a singleton, and this
    test process already holds a one-process one from the tests above.
    """
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.path.insert(0, 'tests'); from accelerate import debug_launcher; "
            "from test_training import _two_process_run; debug_launcher(_two_process_run, num_processes=2)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


class _SetOnMessage:
    """A stderr that sets ``event`` once ``message`` is written to it (and passes everything on)."""

    def __init__(self, stream, message: str, event) -> None:
        self.stream, self.message, self.event = stream, message, event

    def write(self, text: str) -> int:
        if self.message in text:
            self.event.set()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _train_toy_in_cache(cache: str, log: str, building, waiting, first: bool) -> None:
    """Ask the cache for the toy model, logging every build.

    The ``first`` process sets ``building`` from inside its build, so it holds the lock,
    and finishes only once ``waiting`` says the second process found the lock taken.
    The second sets ``waiting`` when the lock tells it to wait.
    """
    import os
    import sys

    from llmimg.core.store import Manifest, cache_key, cached, write_manifest

    os.environ["LLMIMG_CACHE_DIR"] = cache

    def build(out, work):
        with open(log, "a") as f:
            f.write("built\n")
        if first:
            building.set()
            seen = waiting.wait(timeout=60)
            with open(log, "a") as f:
                f.write("the other waited\n" if seen else "the other never waited\n")
        (out / "weights.txt").write_text("w")
        write_manifest(out, Manifest("toy", 1, {"a": 1}))

    if not first:
        sys.stderr = _SetOnMessage(sys.stderr, "waiting for it to finish", waiting)
    cached(cache_key("toy", 1, {"a": 1}), build, profile="smoke")


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory file locks on Windows")
def test_two_processes_asking_for_one_model_train_it_once(tmp_path):
    """The second process asks while the first holds the lock, by construction (no timing): it must wait, then
    find the model the first built instead of building its own."""
    import multiprocessing

    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    building, waiting = ctx.Event(), ctx.Event()
    args = (str(tmp_path / "cache"), str(log), building, waiting)
    first = ctx.Process(target=_train_toy_in_cache, args=(*args, True))
    first.start()
    try:
        assert building.wait(timeout=120), "the first process never started building"
        second = ctx.Process(target=_train_toy_in_cache, args=(*args, False))
        second.start()
        second.join(120)
    finally:
        first.join(120)
    assert [first.exitcode, second.exitcode] == [0, 0]
    assert log.read_text() == "built\nthe other waited\n"
    assert (tmp_path / "cache" / "smoke" / folder_name(cache_key("toy", 1, {"a": 1})) / "weights.txt").is_file()


def test_no_progress_bar_inside_a_notebook_that_llmimg_reproduce_runs(monkeypatch, capsys):
    """Its outputs are committed: a bar asked for with progress=True is left out there, and drawn elsewhere."""
    short = TrainConfig(steps=3, batch_size=16, lr=0.2, weight_decay=0.0, warmup_steps=1, log_every=1)
    fit(fresh_model(), batch, loss, short, desc="bar-test")
    assert "bar-test" in capsys.readouterr().err
    monkeypatch.setenv("LLMIMG_NOTEBOOK", "05_generator")
    fit(fresh_model(), batch, loss, short, desc="bar-test")
    assert "bar-test" not in capsys.readouterr().err
