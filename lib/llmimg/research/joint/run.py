"""Training, scoring and caching the regimes, and the tables and verdicts of notebook 07."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from llmimg.core.config import Profile, get_profile
from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import compare_rates, shapes_eval, standard_error
from llmimg.core.store import (CheckpointError, Manifest, cache_key, cached, quiet_libraries, read_manifest,
                               write_manifest)
from llmimg.core.training import TrainResult, fit
from llmimg.pipelines.shapes import DEFAULT_STEPS
from llmimg.research.joint.config import (FORMAT, METRICS, REGIMES, STAGE, START_STAGE, WEIGHTS, JointConfig,
                                          check_regime, default_config)
from llmimg.research.joint.data import JointData
from llmimg.research.joint.model import JointModel, gradient_norms, stages
from llmimg.research.joint.start import Start, start
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


def train(config: JointConfig, start: Start, *, progress: bool = True, work_dir: str | Path | None = None,
          device: str | torch.device | None = None) -> TrainResult:
    """Fine-tune ``start`` under ``config.regime`` with :func:`~llmimg.core.training.fit` (so accelerate runs it as is).

    The history holds, every ``log_every`` steps, the loss, each model's gradient norm
    and the loss parts (``loss_diffusion``, ``loss_lm``, ``loss_cycle`` or ``loss_reward``).
    """
    data = JointData(config, start)
    model = JointModel(config, start)
    with quiet_libraries():  # transformers' notes on the GPT-2 config's defaults
        return fit(model, data.batch, lambda m, b: m(b), config.train, work_dir=work_dir,
                   desc=f"{config.regime} regime", device=device, progress=progress,
                   meta={"joint": config.identity(), "start": start.folder.name}, log=gradient_norms)


def evaluate(llm: llm_stage.ShapesLLM, image_generator: gen_stage.ShapesGenerator, n: int, *, seed: int = 0,
             num_inference_steps: int = DEFAULT_STEPS) -> dict[str, float]:
    """The four numbers of a regime, each on ``n`` scenes with its standard error (``<key>_se``).

    * ``all_correct`` / ``heldout_all_correct``: ShapesEval of the whole pipeline (the LLM
      upsamples with its checker, the generator draws) on ``val`` / ``heldout`` prompts;
    * ``caption_accuracy``: greedy captions of ``val`` images that are exactly right;
    * ``faithfulness``: the LLM's first sampled descriptions (no checker) that keep every
      attribute the prompt states.
    """
    out: dict[str, float] = {"n": n}
    for key, split in (("all_correct", "val"), ("heldout_all_correct", "heldout")):
        samples = list(ShapesWorld(seed=seed).samples(n, split))
        prompts = [s.prompt for s in samples]
        images = image_generator.generate(llm.upsample(prompts, seed=seed), num_inference_steps=num_inference_steps,
                                    seed=seed, check=False)
        out[key] = shapes_eval(images, prompts).all_correct
        if split == "val":
            captions = llm.caption(np.stack([s.image for s in samples]))
            out["caption_accuracy"] = llm_stage.caption_scores([s.scene for s in samples], captions)["caption_accuracy"]
            first = llm.upsample(prompts, seed=seed, max_tries=1)
            out["faithfulness"] = llm_stage.upsampling_scores(prompts, first, seed=seed)["faithfulness"]
    return {**out, **{f"{k}_se": standard_error(out[k], n) for k in METRICS}}


@dataclass
class RegimeRun:
    """A trained regime: its config, the fine-tuned LLM and generator, the history, the time and the scores."""

    config: JointConfig
    llm: llm_stage.ShapesLLM
    image_generator: gen_stage.ShapesGenerator
    history: list[dict[str, float]]
    train_seconds: float
    metrics: dict[str, float]
    path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What ``llmimg eval joint --json`` prints for this regime."""
        return {**{k: self.metrics[k] for k in (*METRICS, *(f"{m}_se" for m in METRICS), "n")},
                "train_seconds": self.train_seconds, "optimizer_steps": self.config.train.steps,
                "batch_size": self.config.train.batch_size, "lam": self.config.lam}


def eval_size(profile: str | Profile | None = None) -> int:
    """Scenes per split that every regime is scored on (the sizes table's ``joint.eval_n``)."""
    return get_profile(profile).size("joint.eval_n")


def run(regime: str, profile: str | Profile | None = None, *, lam: float | None = None, progress: bool = True,
        force: bool = False) -> RegimeRun:
    """``regime`` trained and scored once per profile and configuration, then read from the model cache."""
    profile = get_profile(profile)
    config = default_config(profile, regime, **({} if lam is None else {"lam": lam}))
    begin = start(profile, progress=progress)
    n = eval_size(profile)
    upstream = {"llm": begin.llm.path.name, START_STAGE: begin.folder.name}
    key = cache_key(STAGE, FORMAT, {**config.identity(), "n_eval": n}, upstream)

    def build(out: Path, work: Path) -> None:
        from safetensors.torch import save_model

        result = train(config, begin, progress=progress, work_dir=work)
        save_model(result.model, str(out / WEIGHTS))
        write_manifest(out, Manifest(STAGE, FORMAT, config.as_dict(), upstream=upstream, history=result.history,
                                     seconds=result.seconds, metrics=evaluate(*stages(result.model), n)))

    return load(cached(key, build, profile=profile, force=force), begin)


def load(folder: str | Path, begin: Start) -> RegimeRun:
    """A regime's cache folder as a :class:`RegimeRun` (weights read with safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    folder = Path(folder)
    retrain = "retrain it with llmimg train joint --regime REGIME --force"
    manifest = read_manifest(folder, STAGE, retrain)
    try:
        config = JointConfig.from_dict(manifest.config)
        model = JointModel(config, begin)
        load_model(model, str(folder / WEIGHTS))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"the joint-training run in {folder.name} is missing or damaged ({err}); "
                              f"{retrain}") from err
    llm, image_generator = stages(model)
    return RegimeRun(config, llm, image_generator, manifest.history, manifest.seconds or 0.0, manifest.metrics,
                     folder)


def compare_all(profile: str | Profile | None = None, regimes: Sequence[str] = REGIMES, *,
                progress: bool = True) -> dict[str, RegimeRun]:
    """Every regime of ``regimes`` at the profile's equal budget (trained where the cache lacks it)."""
    return {r: run(check_regime(r), profile, progress=progress) for r in regimes}


def table(runs: dict[str, RegimeRun]) -> Any:
    """One row per regime: the four scores with their standard errors, the steps and the seconds (pandas)."""
    import pandas as pd

    return pd.DataFrame([{"regime": name, **r.summary()} for name, r in runs.items()]).set_index("regime")


def verdict(runs: dict[str, RegimeRun], metric: str = "all_correct", a: str = "joint", b: str = "separate") -> str:
    """The comparison of ``a`` with ``b`` on ``metric``, with its standard error and the verdict (two SEs)."""
    ra, rb = runs[a].metrics, runs[b].metrics
    return compare_rates(a, ra[metric], b, rb[metric], int(ra["n"]), int(rb["n"]))


__all__ = ["RegimeRun", "compare_all", "eval_size", "evaluate", "load", "run", "table", "train", "verdict"]
