"""Joint training of the LLM and the generator (notebook 07): five regimes at equal compute.

**Where every regime starts.** From the same trained models: the LLM of stage 2, and a
generator whose UNet reads the LLM's GPT-2 hidden states of the description, trained
with the LLM frozen by the pipeline generator's recipe (:func:`start`). Each regime
then fine-tunes for the same number of optimiser steps on batches of the same size:
**equal compute means equal steps and batch**; the seconds
each regime took are reported beside, since a joint step does more work than a
generator step. Fine-tuning trained stages, as TextCraftor and T2I-R1 fine-tune
pretrained models, is what fits a 2-core CPU (five regimes from scratch would take
hours) and asks the question sharply: given the same models and the same extra budget,
does coupling them help? Every regime conditions the generator on GPT-2 states of the
same shape, so the coupling is the only difference.

**The regimes** (:data:`REGIMES`):

* ``separate``: two models that share nothing. The generator (UNet and its own copy of
  the GPT-2 body) learns L_diff; the LLM learns L_LM. Their summed loss has independent
  parameters, so this *is* training them apart.
* ``sequential``: the LLM frozen (trained first), the UNet learns L_diff on its states
  (MetaQuery, BLIP3-o).
* ``joint``: the generator reads the LLM's own GPT-2 body; one loss
  L_diff(I | h_L(D)) + λ · L_LM, gradients into both.
* ``cycle``: ``joint`` plus μ · L_cycle: the LLM captions the generator's clean-image
  estimate x̂₀ (through the frozen CLIP image tower) and must write D again; gradients
  reach the UNet through x̂₀ (ITIT, CycleReward).
* ``reward``: the LLM's upsampling policy learns with REINFORCE and a batch-mean
  baseline; the reward is ShapesEval's all-correct of the image the frozen generator
  draws from the sampled description, judged against the prompt (RePrompt, T2I-R1, DDPO).
  λ · L_LM anchors the policy to the data, as a KL term to the starting model does there.

L_LM is the LLM's own training loss on the batch's scenes: each row is captioning,
-log q(D | CLIP(I)), the P(D | I) term of the joint likelihood, or upsampling,
-log q(D | CLIP(p), p), which keeps the LLM an upsampler.

Under ``accelerate launch`` the same code trains on several processes
(``accelerate launch -m llmimg.joint --regime joint --profile default``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from llmimg import claims
from llmimg import clip as clip_stage
from llmimg import generator as gen_stage
from llmimg import llm as llm_stage
from llmimg.checkpoints import CheckpointError, cached
from llmimg.config import Profile, get_profile
from llmimg.evaluation import shapes_eval, standard_error
from llmimg.pipeline import DEFAULT_STEPS
from llmimg.text import encode
from llmimg.training import StageConfig, TrainConfig, TrainResult, fit

STAGE = "joint"
START_STAGE = "joint-start"
REGIMES = ("separate", "sequential", "joint", "cycle", "reward")
# What each regime trains: the UNet, the GPT-2 body the generator reads, the LLM (its own body included).
TRAINS = {"separate": ("unet", "text", "lm"), "sequential": ("unet",), "joint": ("unet", "text", "lm"),
          "cycle": ("unet", "text", "lm"), "reward": ("lm",)}
METRICS = ("all_correct", "heldout_all_correct", "caption_accuracy", "faithfulness")
WEIGHTS = "model.safetensors"
RUN_FILE = "run.json"


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
    train = TrainConfig(steps=p.pick(smoke=6, default=300, full=3000), batch_size=p.pick(smoke=8, default=32, full=128),
                        lr=3e-4, warmup_steps=p.pick(smoke=1, default=20, full=100),
                        log_every=p.pick(smoke=1, default=10, full=50), checkpoint_every=p.pick(smoke=100, default=100,
                                                                                                full=500))
    return JointConfig(regime=check_regime(regime), train=train, **changes)


# -- the models every regime starts from ----------------------------------------------
@dataclass
class Start:
    """The trained LLM and the generator that reads its GPT-2 states: where every regime starts."""

    llm: llm_stage.ShapesLLM
    unet: nn.Module
    generator_config: gen_stage.GeneratorConfig
    folder: Path  # the generator's cache folder


def start_config(profile: str | Profile | None = None) -> gen_stage.GeneratorConfig:
    """The starting generator's recipe: the pipeline generator's (same UNet, data and steps), on the LLM's states."""
    return replace(gen_stage.default_config(profile), curve_every=0)


def start(profile: str | Profile | None = None, *, progress: bool = True) -> Start:
    """The profile's starting models, from the cache (the generator is trained first if not there).

    The generator is trained by the pipeline generator's recipe (its UNet, data, steps
    and learning rate), but reading the frozen LLM's states (:func:`text_states`)
    instead of CLIP's text tower: the ``sequential`` regime, from a fresh UNet.
    """
    from diffusers import UNet2DConditionModel

    profile = get_profile(profile)
    llm = llm_stage.get(profile, progress=progress)
    config = start_config(profile)
    n_eval = start_key(profile, llm)["n_eval"]

    def build(out: Path, work: Path) -> None:
        torch.manual_seed(config.train.seed)  # the UNet's initial weights
        fresh = Start(llm, gen_stage.build_unet(config, llm.lm.gpt2.config.n_embd), config, out)
        frozen = JointConfig(regime="sequential", train=config.train)
        data, model = JointData(frozen, fresh), JointModel(frozen, fresh)
        descriptions = [s.description for s in claims.eval_samples(n_eval, "val", seed=config.data_seed,
                                                                    max_objects=1)]

        def score(step: int, m: nn.Module) -> dict[str, float] | None:
            """ShapesEval of one-object val descriptions at each quarter of training."""
            if step % max(1, config.train.steps // 4):
                return None
            drawn = stages(copy.deepcopy(m))[1].generate(descriptions, num_inference_steps=DEFAULT_STEPS, check=False)
            judged = shapes_eval(drawn, descriptions)
            return {"n": n_eval, "all_correct": judged.all_correct, **judged.per_attribute}

        result = fit(model, data.batch, lambda m, b: m(b), config.train, work_dir=work, desc="starting generator",
                     progress=progress, meta={"joint-start": config.as_dict()}, on_step=score)
        result.model.unet.save_pretrained(out / "unet", safe_serialization=True)
        record = {"history": result.history, "train_seconds": result.seconds, "curve": result.evaluations}
        (out / RUN_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")

    folder = cached(START_STAGE, start_key(profile, llm), build, profile=profile)
    return Start(llm, UNet2DConditionModel.from_pretrained(folder / "unet"), config, folder)


def start_key(profile: Profile, llm: llm_stage.ShapesLLM) -> dict[str, Any]:
    return {"generator": start_config(profile).as_dict(), "llm": llm.path.name if llm.path else None,
            "states": "mean over layers", "n_eval": profile.pick(smoke=8, default=100, full=200)}


def start_is_cached(profile: str | Profile | None = None) -> bool:
    """Whether every starting model (CLIP, LLM, generator) of the profile is in the cache already."""
    from llmimg.checkpoints import MANIFEST, config_key
    from llmimg.config import cache_dir

    profile = get_profile(profile)
    root = cache_dir(profile)
    llm_config = llm_stage.default_config(profile)
    keys = [config_key("clip", llm_config.clip), config_key("llm", llm_config.as_dict())]
    if not all((root / k / MANIFEST).is_file() for k in keys):
        return False
    llm = llm_stage.get(profile, progress=False)
    return (root / config_key(START_STAGE, start_key(profile, llm)) / MANIFEST).is_file()


# -- the model of a regime --------------------------------------------------------------
def text_states(body: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """h_L(D): the mean of the GPT-2 body's hidden states over its layers, token embeddings included (B, L, width).

    Not the last layer alone: a causal LM's last layer is shaped to predict the *next*
    token, and it keeps little of which shape a word named (a generator reading it drew
    the right shape 22 % of the time on one-object scenes, near chance). The mean keeps
    each token's identity (the embedding layer) and its context (the layers above).
    """
    out = body(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states).mean(0)


class LLMStates(claims.GPT2TextEncoder):
    """The generator's text encoder in every regime: :func:`text_states` of a GPT-2 body."""

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return text_states(self.gpt2, ids, mask)


class JointModel(nn.Module):
    """Everything a regime trains or reads, as one module for :func:`~llmimg.training.fit` and accelerate.

    ``forward(batch)`` returns the regime's loss and keeps its parts (floats) in
    :attr:`parts`. ``text`` is the GPT-2 body the generator reads: the LLM's own in the
    coupled regimes (one module, so one set of weights), a copy otherwise.
    """

    def __init__(self, config: JointConfig, start: Start) -> None:
        super().__init__()
        self.config, self.generator_config = config, start.generator_config
        self.llm_config, self.tokenizer = start.llm.config, start.llm.tokenizer
        self.scheduler = gen_stage.build_scheduler(start.generator_config)
        self.lm = copy.deepcopy(start.llm.lm)
        self.unet = copy.deepcopy(start.unet)
        coupled = config.regime in ("sequential", "joint", "cycle")
        self.text = self.lm.gpt2.transformer if coupled else copy.deepcopy(self.lm.gpt2.transformer)
        self.clip = copy.deepcopy(start.llm.clip.model).requires_grad_(False)  # frozen: the cycle's image tower
        # The same copy behind the writer's encoders, so it moves with the module (accelerate, .to).
        self.shapes_clip = clip_stage.ShapesCLIP(self.clip, start.llm.clip.tokenizer, start.llm.clip.config)
        trains = TRAINS[config.regime]
        self.lm.requires_grad_("lm" in trains)
        self.unet.requires_grad_("unet" in trains)
        self.text.requires_grad_("text" in trains)
        self.parts: dict[str, float] = {}

    def train(self, mode: bool = True) -> JointModel:
        """Training mode for what trains; what is frozen stays as it was trained (no dropout)."""
        super().train(mode)
        trains = TRAINS[self.config.regime]
        for name in ("lm", "unet", "text"):
            if name not in trains:
                getattr(self, name).eval()
        self.clip.eval()
        if self.config.regime == "reward":
            self.lm.eval()  # the policy is scored as it samples: no dropout in its log-probabilities
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def forward(self, b: dict[str, Any]) -> torch.Tensor:
        regime = self.config.regime
        if regime == "reward":
            return self.reinforce(b)
        diffusion, x0 = self.denoising(b)
        parts, loss = {"diffusion": diffusion}, diffusion
        if regime != "sequential":
            parts["lm"] = self.lm(b["z"], b["task"], b["input_ids"], b["attention_mask"], b.get("context"))
            loss = loss + (1.0 if regime == "separate" else self.config.lam) * parts["lm"]
        if regime == "cycle":
            parts["cycle"] = self.cycle(b, x0)
            loss = loss + self.config.cycle_weight * parts["cycle"]
        self.parts = {k: float(v.detach()) for k, v in parts.items()}
        return loss

    def tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = encode(self.tokenizer, list(texts), check=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def denoising(self, b: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """L_diff(I | h(D)) of the batch and the UNet's clean-image estimate x̂₀ of every row."""
        ids, mask = self.tokens(b["texts"])
        states = text_states(self.text, ids, mask)
        noisy = self.scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        pred = gen_stage.unet_output(self.unet, noisy, b["timesteps"], states, mask)
        loss = gen_stage.diffusion_loss(self.generator_config, self.scheduler, pred, b)
        abar = self.scheduler.alphas_cumprod.to(pred.device)[b["timesteps"]].view(-1, 1, 1, 1)
        return loss, gen_stage.clean_estimate(self.generator_config.prediction_type, noisy, pred, abar)

    def cycle(self, b: dict[str, Any], x0: torch.Tensor) -> torch.Tensor:
        """The caption the LLM writes from CLIP(x̂₀) must be D: -log q(D | CLIP(x̂₀)) on the low-noise rows."""
        limit = self.config.cycle_max_t * self.generator_config.num_train_timesteps
        rows = [i for i, (t, text) in enumerate(zip(b["timesteps"].tolist(), b["texts"])) if t < limit and text]
        if not rows:
            return x0.sum() * 0.0  # no row qualifies: a zero that keeps the graph
        pixels = clip_stage.preprocess(gen_stage.to_images(x0[rows], self.generator_config.unshuffle))
        z = self.clip.encode_image(pixels, normalize=True)
        context = None
        if self.llm_config.read_context:
            patches = self.clip.forward_intermediates(image=pixels, image_indices=1, intermediates_only=True,
                                                      normalize_intermediates=True, image_output_fmt="NLC")
            context = llm_stage.Context(patches=patches["image_intermediates"][-1])
        ids, mask = self.tokens([b["texts"][i] for i in rows])
        return self.lm(z, llm_stage.task_ids("caption", len(rows), z.device), ids, mask, context)

    def writer(self) -> llm_stage.ShapesLLM:
        """The LLM being trained, as a :class:`~llmimg.llm.ShapesLLM` (which puts it in eval mode)."""
        return llm_stage.ShapesLLM(self.lm, self.tokenizer, self.shapes_clip, self.llm_config)

    def drawer(self) -> gen_stage.ShapesGenerator:
        """The generator, as a :class:`~llmimg.generator.ShapesGenerator` (which freezes its UNet)."""
        text = LLMStates(self.text, self.tokenizer)
        return gen_stage.ShapesGenerator(self.unet, self.scheduler, text, self.generator_config, device=self.device)

    def reinforce(self, b: dict[str, Any]) -> torch.Tensor:
        """REINFORCE with a batch-mean baseline, (r - mean r) · (-log q(D | prompt)) averaged, plus λ · L_LM.

        The first term's gradient is an unbiased estimate of -∇ E_q[r]; the baseline
        lowers its variance and does not bias it, since E_q[∇ log q] = 0. The second
        anchors the policy to the data, as the KL term to the starting model does in
        RLHF and T2I-R1: without it, 300 Adam steps on a binary reward this noisy let
        the LLM drift until half its descriptions contradicted their prompts.
        """
        prompts, writer = b["prompts"], self.writer()
        with torch.no_grad():
            z = writer.clip.encode_text(prompts, check=False)
            context = writer.context(prompts=prompts)
            written = writer.generate(z, "upsample", context=context, seed=b["seed"])
            # The model names objects in the prompt's order; the generator reads reading order.
            images = self.drawer().generate(llm_stage.in_reading_order(written),
                                            num_inference_steps=self.config.reward_steps, seed=b["seed"], check=False)
            rewards = image_rewards(images, prompts, written).to(self.device)
        ids, mask = self.tokens(written)
        nll = self.lm(z, llm_stage.task_ids("upsample", len(z), z.device), ids, mask,
                      None if context is None else context.to(z.device), per_row=True)
        loss = ((rewards - rewards.mean()) * nll).mean()
        self.parts = {"reward": float(rewards.mean())}
        if self.config.lam:
            anchor = self.lm(b["z"], b["task"], b["input_ids"], b["attention_mask"], b.get("context"))
            loss = loss + self.config.lam * anchor
            self.parts["lm"] = float(anchor.detach())
        return loss


def image_rewards(images: torch.Tensor, prompts: Sequence[str], descriptions: Sequence[str]) -> torch.Tensor:
    """The reward of each drawn image: 1 if ShapesEval finds it all-correct for its prompt, else 0.

    ``descriptions`` (what the policy wrote) are not scored here; they are passed so that
    a different reward (e.g. the tests' cheap one) can read them.
    """
    judged = shapes_eval(images, list(prompts))
    return torch.tensor([float(r.all_correct) for r in judged.records])


def gradient_norms(model: JointModel) -> dict[str, float]:
    """Each model's gradient norm this step (before clipping) and the loss parts: what :func:`train` logs."""
    groups = {"generator": [*model.unet.parameters()], "llm": [*model.lm.parameters()]}
    if model.text is not model.lm.gpt2.transformer:
        groups["generator_text"] = [*model.text.parameters()]
    norms = {}
    for name, params in groups.items():
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        norms[f"grad_norm_{name}"] = float(torch.stack(grads).norm()) if grads else 0.0
    return {**norms, **{f"loss_{k}": v for k, v in model.parts.items()}}


# -- data --------------------------------------------------------------------------------
class JointData:
    """``batch(step)``: the generator's batch of the step and, on the same scenes, the LLM's rows.

    The LLM's examples come from an :class:`~llmimg.llm.LLMBank` of the generator's own
    training scenes (same world seed, same order), so row i of both halves is one scene:
    its image, its description D and its prompt.
    """

    def __init__(self, config: JointConfig, start: Start) -> None:
        self.config = config
        self.generator_config = replace(start.generator_config, train=config.train)
        self.bank = gen_stage.make_bank(self.generator_config)
        self.generator_batch = gen_stage.make_batch_fn(self.generator_config, None, self.bank)
        self.llm_bank = None
        if config.regime != "sequential":
            c = start.llm.config
            self.llm_bank = llm_stage.LLMBank(len(self.bank), start.llm.clip, seed=self.generator_config.data_seed,
                                              read_context=c.read_context, prompt_order=c.prompt_order)

    def batch(self, step: int) -> dict[str, Any]:
        out = self.generator_batch(step)
        idx = out["index"]
        if self.llm_bank is not None:
            g = gen_stage.step_generator(self.config.train.seed + 1, step)
            task = (torch.rand(len(idx), generator=g) < self.config.caption_rate).long()  # 1 = caption
            rows = self.llm_bank.rows(idx, task)
            if self.config.regime == "reward":
                return {"prompts": [self.bank.prompts[i] for i in idx.tolist()],
                        "seed": self.config.train.seed * 1_000_003 + step, **rows}
            out.update(rows)
        return out


# -- training, evaluation and the cache --------------------------------------------------
def train(config: JointConfig, start: Start, *, progress: bool = True, work_dir: str | Path | None = None,
          device: str | torch.device | None = None) -> TrainResult:
    """Fine-tune ``start`` under ``config.regime`` with :func:`~llmimg.training.fit` (so accelerate runs it as is).

    The history holds, every ``log_every`` steps, the loss, each model's gradient norm
    and the loss parts (``loss_diffusion``, ``loss_lm``, ``loss_cycle`` or ``loss_reward``).
    """
    data = JointData(config, start)
    torch.manual_seed(config.train.seed)
    model = JointModel(config, start)
    return fit(model, data.batch, lambda m, b: m(b), config.train, work_dir=work_dir, desc=f"{config.regime} regime",
               device=device, progress=progress, meta={"joint": config.as_dict()}, log=gradient_norms)


def evaluate(llm: llm_stage.ShapesLLM, generator: gen_stage.ShapesGenerator, n: int, *, seed: int = 0,
             num_inference_steps: int = DEFAULT_STEPS) -> dict[str, float]:
    """The four numbers of a regime, each on ``n`` scenes with its standard error (``<key>_se``).

    * ``all_correct`` / ``heldout_all_correct``: ShapesEval of the whole pipeline (the LLM
      upsamples with its checker, the generator draws) on ``val`` / ``heldout`` prompts;
    * ``caption_accuracy``: greedy captions of ``val`` images that are exactly right;
    * ``faithfulness``: the LLM's first sampled descriptions (no checker) that keep every
      attribute the prompt states.
    """
    from llmimg.llm import caption_scores, upsampling_scores

    out: dict[str, float] = {"n": n}
    for key, split in (("all_correct", "val"), ("heldout_all_correct", "heldout")):
        samples = claims.eval_samples(n, split, seed=seed)
        prompts = [s.prompt for s in samples]
        images = generator.generate(llm.upsample(prompts, seed=seed), num_inference_steps=num_inference_steps,
                                    seed=seed, check=False)
        out[key] = shapes_eval(images, prompts).all_correct
        if split == "val":
            captions = llm.caption(np.stack([s.image for s in samples]))
            out["caption_accuracy"] = caption_scores([s.scene for s in samples], captions)["caption_accuracy"]
            first = llm.upsample(prompts, seed=seed, max_tries=1)
            out["faithfulness"] = upsampling_scores(prompts, first, seed=seed)["faithfulness"]
    return {**out, **{f"{k}_se": standard_error(out[k], n) for k in METRICS}}


@dataclass
class RegimeRun:
    """A trained regime: its config, the fine-tuned LLM and generator, the history, the time and the scores."""

    config: JointConfig
    llm: llm_stage.ShapesLLM
    generator: gen_stage.ShapesGenerator
    history: list[dict[str, float]]
    train_seconds: float
    metrics: dict[str, float]
    path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What ``llmimg eval joint --json`` prints for this regime."""
        return {**{k: self.metrics[k] for k in (*METRICS, *(f"{m}_se" for m in METRICS), "n")},
                "train_seconds": self.train_seconds, "optimizer_steps": self.config.train.steps,
                "batch_size": self.config.train.batch_size, "lam": self.config.lam}


def stages(model: JointModel) -> tuple[llm_stage.ShapesLLM, gen_stage.ShapesGenerator]:
    """The LLM and the generator of a trained :class:`JointModel`, ready to write and draw."""
    model.eval()
    return model.writer(), model.drawer()


def eval_size(profile: str | Profile | None = None) -> int:
    """Scenes per split that every regime is scored on: smoke 16, default 256, full 1,000."""
    return get_profile(profile).pick(smoke=16, default=256, full=1000)


def run(regime: str, profile: str | Profile | None = None, *, lam: float | None = None, progress: bool = True,
        force: bool = False) -> RegimeRun:
    """``regime`` trained and scored once per profile and configuration, then read from the model cache."""
    profile = get_profile(profile)
    config = default_config(profile, regime, **({} if lam is None else {"lam": lam}))
    begin = start(profile, progress=progress)
    n = eval_size(profile)
    key = {"joint": config.as_dict(), "llm": begin.llm.path.name if begin.llm.path else None,
           "generator": begin.folder.name, "n_eval": n}
    if regime == "reward":
        key["anchor"] = "lam * L_LM"  # the reward regime's loss gained this term; older runs are not it

    def build(out: Path, work: Path) -> None:
        from safetensors.torch import save_model

        result = train(config, begin, progress=progress, work_dir=work)
        save_model(result.model, str(out / WEIGHTS))
        metrics = evaluate(*stages(result.model), n)
        record = {"config": config.as_dict(), "history": result.history, "train_seconds": result.seconds,
                  "metrics": metrics}
        (out / RUN_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")

    return load(cached(STAGE, key, build, profile=profile, force=force), begin)


def load(folder: str | Path, begin: Start) -> RegimeRun:
    """A regime's cache folder as a :class:`RegimeRun` (weights read with safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    folder = Path(folder)
    retrain = "retrain it with llmimg train joint --regime REGIME --force"
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        config = JointConfig.from_dict(record["config"])
        model = JointModel(config, begin)
        load_model(model, str(folder / WEIGHTS))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"the joint-training run in {folder.name} is missing or damaged ({err}); "
                              f"{retrain}") from err
    llm, generator = stages(model)
    return RegimeRun(config, llm, generator, record["history"], record["train_seconds"], record["metrics"], folder)


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
    return claims.compare(a, ra[metric], b, rb[metric], int(ra["n"]), int(rb["n"]))


# -- `python -m llmimg.joint` / `accelerate launch -m llmimg.joint` --------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Train one regime (on every process accelerate starts); the main process saves and scores it."""
    from accelerate import PartialState

    parser = argparse.ArgumentParser(prog="llmimg.joint", description=main.__doc__)
    parser.add_argument("--regime", required=True, type=check_regime, metavar="{" + ",".join(REGIMES) + "}")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--lam", type=float, default=None, help="λ, the weight of the LLM's loss (default 1)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    state = PartialState()
    if state.num_processes == 1:
        result = run(args.regime, args.profile, lam=args.lam, progress=not args.no_progress)
        print(json.dumps({args.regime: result.summary()}))
        return 0
    config = default_config(args.profile, args.regime, **({} if args.lam is None else {"lam": args.lam}))
    # Every stage fit() trains joins the processes' DDP group: a starting model missing from the cache
    # would be trained by one process while the others wait for it, forever.
    if not start_is_cached(args.profile):
        raise SystemExit(f"llmimg.joint: train the starting models on one process first "
                         f"(llmimg train joint --regime {args.regime} --profile {get_profile(args.profile).name}), "
                         "then launch on several")
    begin = start(args.profile, progress=False)
    result = train(config, begin, progress=not args.no_progress)
    if state.is_main_process:
        llm, generator = stages(result.model)
        print(json.dumps({args.regime: {**evaluate(llm, generator, eval_size(args.profile)),
                                        "train_seconds": result.seconds, "optimizer_steps": config.train.steps,
                                        "processes": state.num_processes}}))
    return 0


__all__ = ["METRICS", "REGIMES", "TRAINS", "JointConfig", "JointData", "JointModel", "LLMStates", "RegimeRun",
           "Start", "check_regime", "compare_all", "default_config", "eval_size", "evaluate", "gradient_norms",
           "image_rewards", "load", "run", "stages", "start", "start_config", "start_is_cached", "table",
           "text_states", "train", "verdict"]


if __name__ == "__main__":
    raise SystemExit(main())
