"""Progressive distillation (llmimg.speed.distillation): its DDIM algebra, its loss, and the students it trains."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from llmimg.speed import distillation as D
from llmimg.stages import generator as G
from llmimg.speed import techniques as T
from llmimg.core.store import CheckpointError
from llmimg.core.data import ShapesWorld
from llmimg.core.training import TrainConfig


def test_the_target_is_the_clean_image_one_ddim_step_needs_to_land_where_two_steps_did():
    g = torch.Generator().manual_seed(0)
    z, z2 = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    a, a2 = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    target = D.one_step_target(z.double(), z2.double(), a, a2)
    torch.testing.assert_close(D.ddim_step(z.double(), target, a, a2), z2.double())
    # Stepping to the clean image (ᾱ = 1) lands on the clean estimate itself.
    x0 = torch.randn(4, 3, 2, 2, generator=g).double()
    torch.testing.assert_close(D.ddim_step(z.double(), x0, a, torch.tensor(1.0, dtype=torch.float64)), x0)


def test_the_student_grid_is_every_other_point_of_the_teacher_grid():
    config = G.build_scheduler(G.GeneratorConfig()).config
    t4, a4 = D.ddim_grid(config, 4)
    t2, a2 = D.ddim_grid(config, 2)
    assert t4.tolist() == [999, 749, 499, 249] and t2.tolist() == t4[::2].tolist()
    assert a4[-1] == 1.0 and torch.equal(a2[:-1], a4[:-1][::2])


class ConstantX0(torch.nn.Module):
    """A stand-in UNet (x-prediction) whose clean estimate is ``value`` everywhere, whatever it reads."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.config = SimpleNamespace(class_embed_type=None, in_channels=3, out_channels=3)

    def forward(self, x, t, **kwargs):
        return SimpleNamespace(sample=torch.full_like(x, self.value))


def test_a_student_that_predicts_what_the_teacher_predicts_has_zero_loss():
    """With a fixed clean estimate, two DDIM steps are one DDIM step, so the target is that estimate."""
    sched_config = G.build_scheduler(G.GeneratorConfig()).config
    uncond = (torch.zeros(1, 4, 8), torch.ones(1, 4, dtype=torch.long))
    batch = {"latents": torch.rand(6, 3, 4, 4) * 2 - 1, "noise": torch.randn(6, 3, 4, 4),
             "step_index": torch.tensor([0, 1, 0, 1, 0, 1]), "states": torch.zeros(6, 4, 8),
             "mask": torch.ones(6, 4, dtype=torch.long)}
    loss = D.make_loss_fn(ConstantX0(0.25), sched_config, 2, 3.0, uncond)
    assert loss(ConstantX0(0.25), batch).item() == pytest.approx(0.0, abs=1e-10)
    off = loss(ConstantX0(0.75), batch).item()
    assert off >= 0.25  # every row is off by 0.5, weighted by max(SNR, 1) ≥ 1
    assert loss(ConstantX0(0.75), batch).item() == pytest.approx(off)


def test_bad_configurations_say_what_is_wrong():
    with pytest.raises(ValueError, match="power of two"):
        D.DistillConfig(steps=1, teacher_steps=3)
    with pytest.raises(ValueError, match="power of two"):
        D.DistillConfig(steps=2, teacher_steps=2)
    with pytest.raises(ValueError, match="positive whole number"):
        D.DistillConfig(steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        D.DistillConfig(guidance_scale=-1.0)
    assert D.DistillConfig(steps=1, teacher_steps=8).phases == [4, 2, 1]


@pytest.fixture(scope="module")
def students(smoke_pipeline):
    return {steps: D.get("smoke", steps=steps, progress=False) for steps in (1, 2)}


def test_each_phase_is_cached_and_the_one_step_student_learns_from_the_two_step_one(students, smoke_pipeline):
    one, two = students[1], students[2]
    assert (D.distill_config(one).steps, D.distill_config(two).steps) == (1, 2)
    assert one.config.guidance_scale == 1.0 and two.config.guidance_scale == 1.0  # guidance is inside them
    assert one.manifest.stage == two.manifest.stage == "distilled"
    assert one.manifest.upstream["distilled"] == two.path.name and one.manifest.extra["teacher_guidance"] == 1.0
    assert two.manifest.upstream["generator"].startswith("generator-") and two.manifest.extra["teacher_guidance"] > 1
    assert one.manifest.upstream["clip"] == two.manifest.upstream["clip"]
    assert not torch.equal(next(one.unet.parameters()), next(two.unet.parameters()))
    assert D.get("smoke", steps=1, progress=False).path == one.path  # loaded, not trained again


def test_a_distilled_student_draws_through_the_pipeline_deterministically_with_one_unet_row_per_image(
        smoke_pipeline, students):
    prompts = [s.prompt for s in ShapesWorld(seed=3).samples(3, "val")]
    student = students[1]
    before = smoke_pipeline.unet, dict(smoke_pipeline.config.stage_configs)
    rows = []
    hook = student.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        with T.swap_generator(smoke_pipeline, student, D.SCHEDULER):
            draw = [smoke_pipeline(prompts, num_inference_steps=D.distill_config(student).steps, output_type="pt",
                                   generator=[torch.Generator().manual_seed(k) for k in range(3)]).images
                    for _ in range(2)]
    finally:
        hook.remove()
    assert (smoke_pipeline.unet, dict(smoke_pipeline.config.stage_configs)) == before  # the teacher is back
    assert smoke_pipeline.image_generator.unet is smoke_pipeline.unet
    assert torch.equal(draw[0], draw[1])
    assert rows == [3, 3]  # one step, no second (unconditional) half


def test_a_folder_that_is_not_a_distilled_student_is_refused(smoke_pipeline, tmp_path):
    smoke_pipeline.image_generator.save_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="holds a generator model, not a distilled"):
        G.ShapesGenerator.from_pretrained(tmp_path / "plain", smoke_pipeline.text_encoder, stage=D.STAGE)
    with pytest.raises(CheckpointError, match="not a distilled student"):
        D.distill_config(smoke_pipeline.image_generator)


def test_only_an_x_predicting_teacher_can_be_distilled(smoke_pipeline):
    from dataclasses import replace

    gen = G.ShapesGenerator(smoke_pipeline.unet, smoke_pipeline.image_generator.scheduler,
                            smoke_pipeline.text_encoder,
                            replace(smoke_pipeline.image_generator.config, prediction_type="epsilon"))
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        D.train(D.DistillConfig(train=TrainConfig(steps=1, batch_size=2)), gen, progress=False)
