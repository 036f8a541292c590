"""Progressive distillation: the guided generator becomes a 1–4-step sampler.

The default generator draws in ``DEFAULT_STEPS`` DPM-Solver++ steps, each a guided UNet
call on two half-batches (with and without the text). Progressive distillation
(Salimans & Ho, 2022) trains a *student* UNet to do in one deterministic DDIM step what
its *teacher* does in two; the student then teaches the next student, halving the step
count each phase: ``teacher_steps → … → steps``. The first phase also bakes
classifier-free guidance into the student (Meng et al., 2023, "On distillation of
guided diffusion models"): its teacher is the guided generator, so the student needs
one UNet call per step instead of two.

One phase, for a student of ``N`` steps on the DDIM grid ``τ_0 > τ_1 > … > τ_{2N}`` of
its ``2N``-step teacher (trailing spacing, ``τ_{2N}`` the clean image), draws a training
image ``x``, noise ``ε`` and a student step ``i``, and with ``t = τ_{2i}``:

* ``z_t = √ᾱ_t x + √(1-ᾱ_t) ε``;
* the teacher takes two DDIM steps, ``z_t → z_t' → z_t''`` (``t' = τ_{2i+1}``,
  ``t'' = τ_{2i+2}``), each ``z_s = √ᾱ_s x̂ + √(1-ᾱ_s) (z − √ᾱ x̂)/√(1-ᾱ)``;
* the target is the clean image ``x̃`` that makes *one* DDIM step from ``z_t`` land on
  ``z_t''``: ``x̃ = (z_t'' − r z_t) / (√ᾱ_t'' − r √ᾱ_t)`` with
  ``r = √(1-ᾱ_t'') / √(1-ᾱ_t)`` (at the last step ``ᾱ_t'' = 1`` and ``x̃ = z_t''``);
* the loss is ``max(SNR_t, 1) · ‖x̂_student(z_t) − x̃‖²``, the paper's truncated-SNR
  weighting for an x-predicting model.

The student starts as a copy of its teacher and trains with :func:`llmimg.core.training.fit`
(resumable, on ``accelerate``). It is saved as an ordinary generator folder (its config's
``guidance_scale`` is 1: guidance is inside it), so it loads with
``ShapesGenerator.from_pretrained(folder, clip, stage="distilled")`` and swaps into the pipeline with
:meth:`llmimg.pipelines.shapes.ShapesPipeline.use_generator`; it samples with the ``"ddim"``
scheduler at ``config.steps`` steps, deterministically per seed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from llmimg.core import seeding
from llmimg.core.config import Profile, get_profile
from llmimg.core.store import CheckpointError, Manifest, cache_key, cached
from llmimg.core.training import StageConfig, TrainConfig, fit
from llmimg.stages import generator as gen_stage

STAGE = "distilled"
FORMAT = 2  # bump when a change to this module's code changes what a distilled student is
SCHEDULER = "ddim"  # the deterministic sampler the students are trained for


@dataclass(frozen=True)
class DistillConfig(StageConfig):
    """A progressive distillation run: from a guided ``teacher_steps``-step DDIM sampler down to ``steps``.

    ``teacher_steps`` must be ``steps`` times a power of two; each halving is one phase of
    ``train.steps`` optimiser steps. ``guidance_scale`` is the guidance baked into the
    first student (None: the generator's default).
    """

    steps: int = 1
    teacher_steps: int = 4
    guidance_scale: float | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=64, lr=1e-4,
                                                                   warmup_steps=20, checkpoint_every=100))

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        for name in ("steps", "teacher_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        ratio = self.teacher_steps / self.steps
        if ratio < 2 or not ratio.is_integer() or int(ratio) & (int(ratio) - 1):
            raise ValueError(f"teacher_steps must be steps times a power of two (2, 4, 8, …): each phase halves "
                             f"the step count; got teacher_steps={self.teacher_steps}, steps={self.steps}")
        if self.guidance_scale is not None and not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ValueError(f"guidance_scale must be a non-negative number or None, got {self.guidance_scale!r}")

    @property
    def phases(self) -> list[int]:
        """The student step count of each phase, e.g. ``[2, 1]`` for 4 → 1."""
        out, n = [], self.teacher_steps
        while n > self.steps:
            n //= 2
            out.append(n)
        return out


def default_config(profile: str | Profile | None = None, steps: int = 1) -> DistillConfig:
    """The distillation of ``profile`` to ``steps`` steps, from the guided generator's 4-step DDIM sampler.

    At ``default`` each phase is 200 steps of batch 64 at learning rate 2e-4 (about 3
    minutes on 2 CPU cores): the 1-step student then draws two-object scenes as well
    as the 10-step teacher (0.87 against 0.89 ± 0.02 on 300 scenes, in the search
    behind this default).
    """
    profile = get_profile(profile)
    iterations = profile.size("distilled.steps")
    return DistillConfig(steps=steps, teacher_steps=max(4, 2 * steps),
                         train=TrainConfig(steps=iterations, batch_size=profile.size("distilled.batch_size"),
                                           lr=2e-4, warmup_steps=min(20, iterations), checkpoint_every=100,
                                           log_every=min(10, iterations)))


def ddim_grid(scheduler_config: Any, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDIM timesteps of ``steps`` steps and the ᾱ at each of them and after the last (the clean image, 1)."""
    sched = gen_stage.make_scheduler(SCHEDULER, scheduler_config)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps.long()
    abar = sched.alphas_cumprod.double()
    return timesteps, torch.cat([abar[timesteps], torch.ones(1, dtype=torch.float64)])


def ddim_step(z: torch.Tensor, x0: torch.Tensor, abar: torch.Tensor, abar_next: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step from ``z`` (noise level ``abar``) to ``abar_next``, given the clean estimate."""
    eps = (z - abar.sqrt() * x0) / (1 - abar).sqrt()
    return abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps


def one_step_target(z: torch.Tensor, z2: torch.Tensor, abar: torch.Tensor, abar2: torch.Tensor) -> torch.Tensor:
    """The clean image ``x̃`` for which one DDIM step from ``z`` (level ``abar``) lands on ``z2`` (level ``abar2``)."""
    r = (1 - abar2).sqrt() / (1 - abar).sqrt()
    return (z2 - r * z) / (abar2.sqrt() - r * abar.sqrt())


def _view(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def make_loss_fn(teacher: torch.nn.Module, scheduler_config: Any, student_steps: int, guidance_scale: float,
                 uncond: tuple[torch.Tensor, torch.Tensor]):
    """``loss(student, batch)`` of one phase: the student's one step against its teacher's two (module docstring)."""
    timesteps, abar = ddim_grid(scheduler_config, 2 * student_steps)

    def teacher_x0(z: torch.Tensor, t: torch.Tensor, b: dict[str, Any]) -> torch.Tensor:
        out = gen_stage.guided_output(teacher, z, t, b["states"], b["mask"], uncond, guidance_scale)
        return out.clamp(-1, 1)  # the sampler clips x̂ too

    def loss(student: torch.nn.Module, b: dict[str, Any]) -> torch.Tensor:
        device = b["latents"].device
        teacher.to(device)
        i = 2 * b["step_index"].cpu()
        a, a1, a2 = (_view(abar[i + k]).to(device) for k in range(3))
        t, t1 = timesteps[i].to(device), timesteps[i + 1].to(device)
        x = b["latents"].double()
        z = a.sqrt() * x + (1 - a).sqrt() * b["noise"].double()
        with torch.no_grad():
            z1 = ddim_step(z, teacher_x0(z.float(), t, b).double(), a, a1)
            z2 = ddim_step(z1, teacher_x0(z1.float(), t1, b).double(), a1, a2)
            target = one_step_target(z, z2, a, a2).float()
        pred = gen_stage.unet_output(student, z.float(), t, b["states"], b["mask"])
        weight = (a / (1 - a)).clamp(min=1.0).float().flatten()
        return (weight * (pred.float() - target).pow(2).mean(dim=(1, 2, 3))).mean()

    return loss


def make_batch_fn(config: DistillConfig, gen_config: gen_stage.GeneratorConfig, text_table: Any,
                  bank: gen_stage.Bank, student_steps: int):
    """``batch(step)``: training images with their description states, noise and a student step, from the step alone."""
    n, size = len(bank), config.train.batch_size

    def batch(step: int) -> dict[str, Any]:
        g = seeding.torch_generator(config.train.seed, "batch", step)
        idx = torch.randint(n, (size,), generator=g)
        latents = gen_stage.to_latents(bank.images[idx].float() / 255.0, gen_config.unshuffle)
        noise = torch.randn(latents.shape, generator=g)
        step_index = torch.randint(student_steps, (size,), generator=g)
        mask = text_table[1][idx]
        length = int(mask.sum(1).max())
        return {"latents": latents, "noise": noise, "step_index": step_index,
                "states": text_table[0][idx, :length], "mask": mask[:, :length]}

    return batch


def train(config: DistillConfig, teacher: gen_stage.ShapesGenerator, *, work_dir: str | Path | None = None,
          progress: bool = True, device: str | torch.device | None = None) -> gen_stage.ShapesGenerator:
    """Distil ``teacher`` into a ``config.steps``-step DDIM student, phase by phase; returns it (not saved).

    The student is an ordinary generator whose config's ``guidance_scale`` is 1 (guidance
    is inside it); its manifest's stage is ``"distilled"`` and ``extra`` holds the
    :class:`DistillConfig` (``"distillation"``) and each phase's history and seconds.
    """
    if teacher.config.prediction_type != "sample":
        raise ValueError(f"progressive distillation here trains x-predicting students and needs an x-predicting "
                         f"teacher (prediction_type='sample'), got {teacher.config.prediction_type!r}")
    t0 = time.perf_counter()
    gen_config = teacher.config
    guidance = gen_config.guidance_scale if config.guidance_scale is None else config.guidance_scale
    bank = gen_stage.make_bank(gen_config)
    table = gen_stage.encode_texts(teacher.text_encoder, bank.descriptions)
    uncond = tuple(x.cpu() for x in teacher.text_states([""], check=False))
    sched_config = teacher.scheduler.config
    current, scale, phases = copy.deepcopy(teacher.unet).cpu(), guidance, []
    for k, student_steps in enumerate(config.phases):
        frozen = current.eval().requires_grad_(False)
        student = copy.deepcopy(frozen).train().requires_grad_(True)
        result = fit(student, make_batch_fn(config, gen_config, table, bank, student_steps),
                     make_loss_fn(frozen, sched_config, student_steps, scale, uncond), config.train,
                     work_dir=None if work_dir is None else Path(work_dir) / f"phase-{k}",
                     desc=f"distil {2 * student_steps}→{student_steps} steps", device=device, progress=progress,
                     meta={"distillation": config.identity(), "phase": k})
        phases.append({"steps": student_steps, "history": result.history, "seconds": result.seconds})
        current, scale = result.model, 1.0  # guidance is baked in after the first phase
    student = gen_stage.ShapesGenerator(current.to(teacher.device), teacher.scheduler, teacher.text_encoder,
                                        replace(gen_config, guidance_scale=1.0))
    teacher_stage = teacher.manifest.stage
    student.manifest = Manifest(
        STAGE, FORMAT, student.config.as_dict(),
        upstream={**teacher.manifest.upstream, **({teacher_stage: teacher.path.name} if teacher.path else {})},
        history=phases[-1]["history"], seconds=time.perf_counter() - t0,
        extra={"distillation": config.as_dict(), "teacher_guidance": guidance, "phases": phases})
    return student


def distill_config(student: gen_stage.ShapesGenerator) -> DistillConfig:
    """The :class:`DistillConfig` a student was distilled with (from its manifest)."""
    try:
        return DistillConfig.from_dict(student.manifest.extra["distillation"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{student.path.name if student.path else 'this generator'!r} is not a distilled "
                              f"student ({err}); distil one with `llmimg train distilled`") from err


def get(profile: str | Profile | None = None, *, steps: int = 1, config: DistillConfig | None = None,
        force: bool = False, progress: bool = True) -> gen_stage.ShapesGenerator:
    """The profile's generator distilled to ``steps`` steps, from the model cache (distilled first if missing).

    Each phase is cached on its own: the 1-step student is distilled from the cached
    2-step one, so asking for both costs the phases once.
    """
    profile = get_profile(profile)
    config = config or default_config(profile, steps)
    if len(config.phases) > 1:  # the student of the phase before is this phase's teacher
        teacher = get(profile, config=replace(config, steps=2 * config.steps), force=force, progress=progress)
        config = replace(config, teacher_steps=2 * config.steps, guidance_scale=1.0)
    else:
        teacher = gen_stage.get(profile, progress=progress)
    key = cache_key(STAGE, FORMAT, config.identity(),
                    {**teacher.manifest.upstream, teacher.manifest.stage: teacher.path.name})

    def build(out: Path, work: Path) -> None:
        train(config, teacher, work_dir=work, progress=progress).save_pretrained(out)

    folder = cached(key, build, profile=profile, force=force)
    return gen_stage.ShapesGenerator.from_pretrained(folder, teacher.text_encoder, stage=STAGE)


__all__ = ["FORMAT", "SCHEDULER", "STAGE", "DistillConfig", "ddim_grid", "ddim_step", "default_config",
           "distill_config", "get", "make_batch_fn", "make_loss_fn", "one_step_target", "train"]
