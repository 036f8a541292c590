"""Joint training (llmimg.research.joint): the regimes' losses, where their gradients go, two processes, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmimg.research import joint
from llmimg.core.training import fit


@pytest.fixture(scope="module")
def begin(smoke_llm):
    return joint.start("smoke", progress=False)


def _short_descriptions(images, prompts, descriptions):
    """A reward the smoke LLM can learn in a few steps (its images are noise): write fewer words."""
    return torch.tensor([-len(d.split()) / 10 for d in descriptions])


def _tiny(regime: str, steps: int = 25) -> joint.JointConfig:
    config = joint.default_config("smoke", regime)
    return replace(config, train=replace(config.train, steps=steps, lr=3e-3, warmup_steps=1))


@pytest.mark.parametrize("regime", joint.REGIMES)
def test_each_regimes_loss_falls_on_a_tiny_run(regime, begin, monkeypatch):
    """One batch trained on again and again: the regime's objective goes down (the reward, up)."""
    monkeypatch.setattr("llmimg.research.joint.model.image_rewards", _short_descriptions)
    config = _tiny(regime)
    if regime == "reward":
        config = replace(config, lam=0.0)  # the reward alone: its anchor to the data would pull the other way
    first = joint.JointData(config, begin).batch(0)
    torch.manual_seed(0)
    model = joint.JointModel(config, begin)
    # The reward regime samples new descriptions every step (its seed moves); the others see one fixed batch.
    result = fit(model, lambda step: {**first, "seed": step}, lambda m, b: m(b), config.train, progress=False,
                 log=joint.gradient_norms)
    key = "loss_reward" if regime == "reward" else "loss"
    values = [h[key] for h in result.history]
    early, late = sum(values[:5]) / 5, sum(values[-5:]) / 5
    if regime == "reward":
        assert late > early, values
    else:
        assert late < 0.8 * early, values


def _grads(model: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("regime", joint.REGIMES)
def test_gradients_reach_the_models_each_regime_trains(regime, begin, monkeypatch):
    """Both models in the joint regimes, the generator alone when the LLM is frozen, the LLM alone under reward."""
    monkeypatch.setattr("llmimg.research.joint.model.image_rewards", _short_descriptions)
    config = joint.default_config("smoke", regime)
    model = joint.JointModel(config, begin).train()
    model(joint.JointData(config, begin).batch(0)).backward()
    reaches = {"unet": _grads(model.unet), "lm": _grads(model.lm), "text": _grads(model.text)}
    expected = {"separate": (True, True, True), "sequential": (True, False, False), "joint": (True, True, True),
                "cycle": (True, True, True), "reward": (False, True, False)}[regime]
    assert (reaches["unet"], reaches["lm"], reaches["text"]) == expected
    assert not _grads(model.clip)
    # Coupled: the generator reads the LLM's own GPT-2 body; apart, a copy of it.
    assert (model.text is model.lm.gpt2.transformer) == (regime in ("sequential", "joint", "cycle"))


def test_the_cycle_reaches_the_unet_through_the_clean_image_estimate(begin):
    config = joint.default_config("smoke", "cycle", cycle_max_t=1.0)
    model = joint.JointModel(config, begin).train()
    b = joint.JointData(config, begin).batch(0)
    _, x0 = model.denoising(b)
    model.cycle(b, x0).backward()
    assert _grads(model.unet) and _grads(model.lm)


def test_the_llm_rows_describe_the_generators_scenes(begin):
    """Row i of the generator's batch and of the LLM's batch is one scene."""
    from llmimg.core.text import decode

    data = joint.JointData(joint.default_config("smoke", "joint"), begin)
    b = data.batch(3)
    captions = [i for i, t in enumerate(b["task"].tolist()) if t == 1]
    written = decode(begin.llm.tokenizer, b["input_ids"][captions])
    assert written == [data.bank.descriptions[i] for i in b["index"][captions].tolist()]


@pytest.mark.parametrize("changes, message", [({"regime": "bogus"}, "unknown regime 'bogus'; choose one of"),
                                              ({"lam": -0.5}, "lam must be a non-negative number"),
                                              ({"lam": float("nan")}, "lam must be a non-negative number"),
                                              ({"cycle_weight": -1}, "cycle_weight must be a non-negative")])
def test_bad_settings_get_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        joint.JointConfig(**changes)


def test_the_starting_models_are_known_to_be_cached(begin, monkeypatch, tmp_path):
    assert joint.start_is_cached("smoke")
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))  # an empty cache: a launch on several processes is refused
    assert not joint.start_is_cached("smoke")


def test_the_clis_regimes_are_the_librarys():
    from llmimg.cli.parser import JOINT_REGIMES

    assert JOINT_REGIMES == joint.REGIMES


def test_a_run_is_cached_scored_and_refused_when_damaged(begin, tmp_path):
    first = joint.run("sequential", "smoke", progress=False)
    again = joint.run("sequential", "smoke", progress=False)
    assert again.path == first.path and again.metrics == first.metrics
    summary = first.summary()
    for key in (*joint.METRICS, *(f"{m}_se" for m in joint.METRICS), "train_seconds", "optimizer_steps"):
        assert key in summary
    assert summary["optimizer_steps"] == joint.default_config("smoke").train.steps
    # The LLM was frozen: the run's LLM is the one it started from.
    for a, b in zip(first.llm.lm.parameters(), begin.llm.lm.parameters()):
        assert torch.equal(a, b)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in first.path.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    (damaged / joint.WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="damaged.*llmimg train joint"):
        joint.load(damaged, begin)


def test_cli_eval_joint_prints_one_entry_per_regime(smoke_llm, capsys):
    from llmimg.cli import main

    assert main(["eval", "joint", "--profile", "smoke", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["regimes"]) == set(joint.REGIMES)
    for entry in out["regimes"].values():
        assert 0.0 <= entry["all_correct"] <= 1.0 and entry["all_correct_se"] >= 0.0
        assert entry["optimizer_steps"] == joint.default_config("smoke").train.steps
    assert out["verdict"].startswith("joint ")


def test_cli_train_joint_trains_a_regime(smoke_llm, capsys):
    """The command `accelerate launch -m llmimg train joint` runs on every process, here on one."""
    from llmimg.cli import main

    assert main(["train", "joint", "--regime", "sequential", "--profile", "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sequential regime (smoke profile): 6 optimiser steps of 8" in out and "all_correct" in out


def test_cli_train_joint_needs_a_regime(capsys):
    from llmimg.cli import main

    with pytest.raises(SystemExit, match="choose a regime with --regime"):
        main(["train", "joint", "--profile", "smoke"])
    with pytest.raises(SystemExit):
        main(["train", "joint", "--regime", "bogus", "--profile", "smoke"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def _two_process_joint_run():
    from accelerate import PartialState

    begin = joint.start("smoke", progress=False)
    result = joint.train(_tiny("joint", steps=12), begin, progress=False)
    assert PartialState().num_processes == 2
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-4:]) < sum(losses[:4]), losses
    weights = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    gathered = [torch.zeros_like(weights) for _ in range(2)]
    torch.distributed.all_gather(gathered, weights)
    assert torch.equal(gathered[0], gathered[1])  # DDP keeps both processes' models identical


def test_joint_training_runs_unchanged_on_two_processes(begin):
    """What `accelerate launch --num_processes 2 -m llmimg train joint` does, on the CPU (gloo), in a fresh interpreter."""
    code = ("import sys; sys.path.insert(0, 'tests'); from accelerate import debug_launcher; "
            "from test_joint import _two_process_joint_run; debug_launcher(_two_process_joint_run, num_processes=2)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
