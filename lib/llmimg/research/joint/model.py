"""The model of a regime: everything it trains or reads, with each regime's losses, as one ``nn.Module``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from llmimg.core.evaluation import shapes_eval
from llmimg.core.text import encode
from llmimg.research.joint import coupled
from llmimg.research.joint.config import TRAINS, JointConfig
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


@dataclass
class Start:
    """The trained LLM and the generator that reads its GPT-2 states: where every regime starts."""

    llm: llm_stage.ShapesLLM
    unet: nn.Module
    generator_config: gen_stage.GeneratorConfig
    folder: Path  # the generator's cache folder


class JointModel(nn.Module):
    """Everything a regime trains or reads, as one module for :func:`~llmimg.core.training.fit` and accelerate.

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
        states = llm_stage.hidden_states(self.text, ids, mask, "mean")
        noisy = self.scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        pred = gen_stage.unet_output(self.unet, noisy, b["timesteps"], states, mask)
        loss = gen_stage.diffusion_loss(self.generator_config, self.scheduler, pred, b)
        abar = self.scheduler.alphas_cumprod.to(pred.device)[b["timesteps"]].view(-1, 1, 1, 1)
        return loss, gen_stage.clean_estimate(self.generator_config.prediction_type, noisy, pred, abar)

    def cycle(self, b: dict[str, Any], x0: torch.Tensor) -> torch.Tensor:
        """The caption the LLM writes from CLIP(x̂₀) must be D: -log q(D | CLIP(x̂₀)) on the low-noise rows."""
        g = self.generator_config
        return coupled.caption_cycle(self.lm, self.clip, self.tokenizer, self.llm_config.read_context, b, x0,
                                     self.config.cycle_max_t * g.num_train_timesteps, g.unshuffle)

    def writer(self) -> llm_stage.ShapesLLM:
        """The LLM being trained, as a :class:`~llmimg.stages.llm.ShapesLLM` (which puts it in eval mode)."""
        return llm_stage.ShapesLLM(self.lm, self.tokenizer, self.shapes_clip, self.llm_config)

    def image_generator(self) -> gen_stage.ShapesGenerator:
        """The generator, as a :class:`~llmimg.stages.generator.ShapesGenerator` (which freezes its UNet)."""
        text = llm_stage.GPT2TextEncoder(self.text, self.tokenizer, layers="mean")
        return gen_stage.ShapesGenerator(self.unet, self.scheduler, text, self.generator_config)

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
            written = writer.generate(z, "upsample", context=context, seeds=llm_stage.prompt_seeds(b["seed"], len(z)))
            # The model names objects in the prompt's order; the generator reads reading order.
            images = self.image_generator().generate(llm_stage.in_reading_order(written), check=False,
                                                     num_inference_steps=self.config.reward_steps, seed=b["seed"])
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



def stages(model: JointModel) -> tuple[llm_stage.ShapesLLM, gen_stage.ShapesGenerator]:
    """The LLM and the generator of a trained :class:`JointModel`, ready to write and draw."""
    model.eval()
    return model.writer(), model.image_generator()


__all__ = ["JointModel", "Start", "gradient_norms", "image_rewards", "stages"]
