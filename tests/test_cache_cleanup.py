"""Killing a training process at any point leaves a model cache that the next run cleans up and completes.

Each case runs a real training process (the library's ``fit`` inside ``checkpoints.cached``),
kills it with SIGKILL at one point, then runs it again: the second run must finish,
leave no hidden folders behind, and give the same weights as a run never killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmimg.core.store import cache_key, clean_leftovers, folder_name

SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import torch
    from torch import nn
    from llmimg.core import store as checkpoints
    from llmimg.core import training

    point = sys.argv[1]
    CONFIG = training.TrainConfig(steps=12, batch_size=8, lr=0.1, warmup_steps=2, checkpoint_every=5)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def batch(step):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(step))
        return {"x": x, "y": x.sum(1, keepdim=True)}

    def on_step(step, model):
        if step == 7 and point == "training":
            die()
        if step == 7 and point == "ctrl-c, then kill while saving":
            real = training.save_tensors
            def save_then_die(tensors, path):
                real(tensors, path)
                die()  # the checkpoint of the interrupted run is half written
            training.save_tensors = save_then_die
            raise KeyboardInterrupt

    real_replace = os.replace
    def model_folder(path):  # the cache's model folder, not the training loop's resumable state
        return os.path.basename(path).startswith(".toy-") and ".partial" not in os.path.basename(path)

    def replace(src, dst):
        if point == "before the swap" and model_folder(src):
            die()  # the model is complete in its hidden folder
        real_replace(src, dst)
        if point == "during the swap" and model_folder(dst):
            die()  # the old model is moved aside, the new one not yet in place
    os.replace = replace

    def build(out, work):
        print("trained", flush=True)
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        result = training.fit(model, batch, lambda m, b: nn.functional.mse_loss(m(b["x"]), b["y"]), CONFIG,
                              work_dir=work, progress=False, on_step=on_step)
        if point == "saving the model":
            (out / "half.safetensors").write_bytes(b"half")
            die()
        checkpoints.save_tensors(result.model.state_dict(), out / "model.safetensors")
        checkpoints.write_manifest(out, checkpoints.Manifest("toy", 1, {"v": 1}))

    checkpoints.cached(checkpoints.cache_key("toy", 1, {"v": 1}), build, profile="smoke",
                       force=point == "during the swap")
''')


TOY = folder_name(cache_key("toy", 1, {"v": 1}))


def run(point: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMIMG_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", SCRIPT, point], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    cache = tmp_path_factory.mktemp("reference")
    assert run("none", cache).returncode == 0
    return (cache / "smoke" / TOY / "model.safetensors").read_bytes()


@pytest.mark.parametrize("point", ["training", "ctrl-c, then kill while saving", "saving the model",
                                   "before the swap", "during the swap"])
def test_a_killed_run_is_cleaned_up_and_completed_by_the_next(point, reference, tmp_path):
    root = tmp_path / "smoke"
    if point == "during the swap":  # replacing a finished model (`--force`)
        assert run("none", tmp_path).returncode == 0
    killed = run(point, tmp_path)
    assert killed.returncode == -9, killed.stderr
    assert [p for p in root.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]  # it did leave something

    again = run("none", tmp_path)
    assert again.returncode == 0, again.stderr
    # A model complete in its hidden folder is moved into place, not trained again.
    assert ("trained" in again.stdout) == (point not in ("before the swap", "during the swap"))
    assert sorted(p.name for p in root.iterdir()) == [f".{TOY}.lock",
                                                      TOY]
    final = root / TOY
    assert sorted(p.name for p in final.iterdir()) == ["llmimg.json", "model.safetensors"]
    assert (final / "model.safetensors").read_bytes() == reference  # resumed runs end bit-identical


# A process that holds a model's training lock, as every run writing into the cache does, and sleeps.
HOLD_LOCK = ("import fcntl, sys, time\n"
             "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")


def test_leftovers_of_a_live_process_are_kept(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / ".clip-0123456789.lock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "locked"
        (tmp_path / f".clip-0123456789.tmp-{live.pid}").mkdir()
        (tmp_path / f".clip-0123456789.partial.tmp-{live.pid}").mkdir()  # its resumable state, being saved
        (tmp_path / f".clip-0123456789.tmp-{os.getpid()}").mkdir()  # this process's own save in progress
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (tmp_path / f".llm-0123456789.old-{dead.stdout.strip()}").mkdir()
        assert clean_leftovers(tmp_path) == [f".llm-0123456789.old-{dead.stdout.strip()}"]
        assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3
    finally:
        live.kill()
        live.wait()


def test_leftovers_whose_process_number_was_reused_are_cleaned(tmp_path):
    """The number in a leftover's name belongs to a running process that is not training that model: clean it."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, holds no lock
    try:
        (tmp_path / f".clip-0123456789.tmp-{other.pid}").mkdir()
        (tmp_path / ".generator-0123456789.lock").touch()  # a lock file no one holds any more
        (tmp_path / f".generator-0123456789.partial.tmp-{other.pid}").mkdir()
        assert sorted(clean_leftovers(tmp_path)) == [f".clip-0123456789.tmp-{other.pid}",
                                                     f".generator-0123456789.partial.tmp-{other.pid}"]
        # The model whose lock the caller holds: no one else can be writing it.
        (tmp_path / f".llm-0123456789.tmp-{other.pid}").mkdir()
        assert clean_leftovers(tmp_path, held="llm-0123456789") == [f".llm-0123456789.tmp-{other.pid}"]
    finally:
        other.kill()
        other.wait()
