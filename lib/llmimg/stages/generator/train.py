"""Training the image generator: the DDPM objective on a bank of rendered scenes and frozen text states.

Noise a latent with :meth:`~diffusers.DDPMScheduler.add_noise` at a random timestep and
regress the UNet's target (the clean latent, the noise or the velocity), weighted by
Min-SNR-γ. With probability ``cond_dropout`` the description is replaced by ``""`` (the
text ``<bos> <eos>``), so one network learns both the conditional and the unconditional
prediction that classifier-free guidance combines.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmimg.core import seeding
from llmimg.core.data import ShapesWorld
from llmimg.core.data.worlds import world_samples
from llmimg.core.evaluation import shapes_eval
from llmimg.core.text import world_of
from llmimg.core.training import fit
from llmimg.stages.generator.config import GeneratorConfig
from llmimg.stages.generator.model import ShapesGenerator, TextEncoder, encoder_upstream
from llmimg.stages.generator.unet import build_scheduler, build_unet, to_latents, unet_output


@dataclass
class Bank:
    """A fixed set of training samples: uint8 images ``(N, 3, 32, 32)``, their descriptions and prompts."""

    images: torch.Tensor
    descriptions: list[str]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.descriptions)


def make_bank(config: GeneratorConfig, world: str = "shapes") -> Bank:
    """Render the ``n_train`` training samples of ``config`` in ``world`` once (thousands per second).

    Today's world draws scenes of up to ``config.max_objects`` objects; the GenEval-shaped
    world its categories' scenes of 1 to 4.
    """
    samples = world_samples(world, config.n_train, "train", seed=config.data_seed, max_objects=config.max_objects,
                            category_weights=config.category_weights)
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()
    return Bank(images, [s.description for s in samples], [s.prompt for s in samples])


def encode_texts(text_encoder: TextEncoder, texts: list[str], chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen text states ``(N, L, width)`` and masks ``(N, L)`` of unchecked texts, computed once in chunks."""
    states, masks = [], []
    with torch.no_grad():
        for start in range(0, len(texts), chunk):
            s, m = text_encoder.token_states(texts[start:start + chunk], check=False)
            states.append(s.detach().float().cpu())
            masks.append(m.detach().cpu())
    return torch.cat(states), torch.cat(masks)


def make_batch_fn(config: GeneratorConfig, text_encoder: TextEncoder | None, bank: Bank):
    """``batch(step)``: a pure function of the step drawing samples, dropped conditions, noise and timesteps.

    The frozen text encoder runs once, before training, over every text of the bank
    (and ``""``): its states are a lookup table, which saves about an eighth of each
    step. The batch holds the clean latents, the noise, the timesteps and the text
    states with their mask, cut to the longest text in the batch (padding is masked
    anyway, so this changes nothing but the cost of cross-attention). With
    ``text_encoder=None`` it holds the ``texts`` instead, for a model that encodes them
    itself (a text encoder trained along with the UNet).
    """
    n, size = len(bank), config.train.batch_size
    table = None
    if text_encoder is not None:
        table = encode_texts(text_encoder, ["", *bank.descriptions, *(bank.prompts if config.prompt_rate else [])])

    def batch(step: int) -> dict[str, Any]:
        g = seeding.torch_generator(config.train.seed, "batch", step)
        idx = torch.randint(n, (size,), generator=g)
        latents = to_latents(bank.images[idx].float() / 255.0, config.unshuffle)
        drop = torch.rand(size, generator=g) < config.cond_dropout
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(config.num_train_timesteps, (size,), generator=g)
        short = torch.rand(size, generator=g) < config.prompt_rate  # the prompt instead of the description
        out = {"latents": latents, "noise": noise, "timesteps": timesteps, "index": idx}
        if table is None:
            texts = ["" if d else (bank.prompts[i] if p else bank.descriptions[i])
                     for d, p, i in zip(drop.tolist(), short.tolist(), idx.tolist())]
            return {**out, "texts": texts}
        rows = torch.where(drop, 0, 1 + idx + n * short.long())  # row 0 is "", then descriptions, then prompts
        mask = table[1][rows]
        length = int(mask.sum(1).max())
        return {**out, "states": table[0][rows, :length], "mask": mask[:, :length]}

    return batch


def make_loss_fn(config: GeneratorConfig, scheduler: Any):
    """``loss(unet, batch)``: the DDPM epsilon objective (optionally Min-SNR-γ weighted)."""

    def loss(unet: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        noisy = scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
        return diffusion_loss(config, scheduler, unet_output(unet, noisy, b["timesteps"], b["states"], b["mask"]), b)

    return loss


def diffusion_loss(config: GeneratorConfig, scheduler: Any, pred: torch.Tensor, b: dict[str, Any]) -> torch.Tensor:
    """The weighted denoising error of the UNet's output ``pred`` on batch ``b`` (what :func:`make_loss_fn` uses)."""
    if config.prediction_type == "epsilon":
        target = b["noise"]
    elif config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(b["latents"], b["noise"], b["timesteps"])
    else:
        target = b["latents"]
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    if config.snr_gamma is None:
        return err.mean()
    abar = scheduler.alphas_cumprod.to(err.device)[b["timesteps"]].float()
    snr = abar / (1 - abar)
    weight = snr.clamp(max=config.snr_gamma) / {"epsilon": snr, "v_prediction": snr + 1, "sample": 1}[
        config.prediction_type]
    return (err * weight).mean()


def train(config: GeneratorConfig, text_encoder: TextEncoder, *, work_dir: str | Path | None = None,
          progress: bool = True, device: str | torch.device | None = None) -> ShapesGenerator:
    """Train a generator on ``text_encoder``'s frozen states with :func:`~llmimg.core.training.fit`; not saved.

    ``work_dir`` keeps resumable checkpoints. Batches are a pure function of the step, so
    an interrupted and resumed run trains on the same data as an uninterrupted one. With
    ``config.curve_every``, ShapesEval of ``config.curve_n`` one-object ``val``
    descriptions is scored along the way: the returned generator's ``manifest.curve``
    (its time axis leaves out the time spent scoring).
    """
    t0 = time.perf_counter()
    with seeding.isolated(config.train.seed, "init"):
        unet = build_unet(config, text_encoder.width)
    scheduler = build_scheduler(config)
    bank = make_bank(config, world_of(text_encoder.tokenizer))  # the text encoder's world
    on_step = None
    if config.curve_every:
        samples = ShapesWorld(seed=config.data_seed, max_objects=1).samples(config.curve_n, "val")
        descriptions = [s.description for s in samples]

        def on_step(step: int, model: torch.nn.Module) -> dict[str, float] | None:
            if step % config.curve_every and step != config.train.steps:
                return None
            gen = ShapesGenerator(copy.deepcopy(model), scheduler, text_encoder, config)  # it freezes what it gets
            judged = shapes_eval(gen.generate(descriptions, check=False), descriptions)
            return {"n": config.curve_n, "all_correct": judged.all_correct, "count_accuracy": judged.count_accuracy,
                    **judged.per_attribute}

    setup = time.perf_counter() - t0  # building the bank and encoding its texts counts as training time
    result = fit(unet, make_batch_fn(config, text_encoder, bank), make_loss_fn(config, scheduler), config.train,
                 work_dir=work_dir, desc="generator", device=device, progress=progress,
                 meta={"generator": config.identity(), **encoder_upstream(text_encoder)}, on_step=on_step)
    gen = ShapesGenerator(result.model, scheduler, text_encoder, config)
    gen.manifest.history, gen.manifest.seconds = result.history, time.perf_counter() - t0
    gen.manifest.curve = [{**point, "train_seconds": setup + point["train_seconds"]} for point in result.evaluations]
    return gen


__all__ = ["Bank", "diffusion_loss", "encode_texts", "make_bank", "make_batch_fn", "make_loss_fn", "train"]
