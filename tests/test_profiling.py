"""How far the code is from the machine: FLOP counts checked by hand, MFU, and the per-stage costs."""

from __future__ import annotations

import pytest
import torch

from llmimg.speed import profiling as prof
from llmimg.core.data import ShapesWorld
from llmimg.pipelines.shapes import DEFAULT_STEPS


def test_flops_of_small_known_layers_match_the_hand_count():
    batch, n_in, n_out = 3, 8, 16
    linear = torch.nn.Linear(n_in, n_out)
    total, by_module = prof.count_flops(lambda: linear(torch.randn(batch, n_in)))
    assert total == 2 * batch * n_in * n_out  # one multiply and one add per weight and row; the bias is not counted
    assert by_module == {"Linear": total}

    conv = torch.nn.Conv2d(4, 6, kernel_size=3, padding=1)
    total, _ = prof.count_flops(lambda: conv(torch.randn(2, 4, 5, 5)))
    assert total == 2 * 2 * 6 * 5 * 5 * (4 * 3 * 3)  # per output value: a 4×3×3 dot product

    x = torch.randn(2, 8, requires_grad=True)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    forward, _ = prof.count_flops(lambda: net(x))
    both, _ = prof.count_flops(lambda: net(x).sum().backward())
    assert both == 3 * forward  # backward through a linear layer: two products as large (grads of input and weight)


def test_mfu_and_its_inputs():
    assert prof.mfu(2e9, 0.5, 8.0) == pytest.approx(0.5)  # 4 GFLOP/s achieved of a peak of 8
    with pytest.raises(ValueError, match="positive"):
        prof.mfu(1e9, 0.0, 10.0)
    with pytest.raises(ValueError, match="positive"):
        prof.peak_matmul_gflops(size=0)
    with pytest.raises(ValueError, match="repeats"):
        prof.median_seconds(lambda: None, repeats=0)
    assert prof.peak_matmul_gflops(size=128, repeats=2) > 0 and prof.memory_bandwidth_gbs(mib=4, repeats=2) > 0
    with pytest.raises(ValueError, match="positive"):
        prof.memory_bandwidth_gbs(mib=0)


def test_stage_flops_add_up_and_the_denoising_share_is_steps_times_one_step(smoke_pipeline):
    samples = list(ShapesWorld(seed=5).samples(2, "val"))
    per_image = prof.flops_by_stage(smoke_pipeline, [s.prompt for s in samples], num_inference_steps=DEFAULT_STEPS)
    assert per_image["clip"] > 0 and per_image["llm"] > 0 and per_image["denoise"] > 0
    assert sum(v for k, v in per_image.items() if k != "total") == pytest.approx(per_image["total"])
    # The text states have a fixed length, so one guided step costs the same whatever the description.
    step = prof.sampling_step_cost(smoke_pipeline, [s.description for s in samples], repeats=1)
    assert per_image["denoise"] == pytest.approx(DEFAULT_STEPS * step["flops"] / len(samples))
    assert step["seconds"] > 0


def test_training_step_costs_about_three_forward_passes_and_leaves_the_pipeline_alone(smoke_pipeline):
    unet = smoke_pipeline.image_generator.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    train = prof.training_step_cost(smoke_pipeline, repeats=1, n_bank=32)
    sample = prof.sampling_step_cost(smoke_pipeline, ["a large red circle in the center"], repeats=1)
    # A guided sampling step runs the UNet forward on 2 rows (with and without the text);
    # a training step forward and backward on the batch, with texts cut to the batch's longest.
    per_row_forward = sample["flops"] / 2
    assert 2 < train["flops"] / (train["batch_size"] * per_row_forward) < 3.5
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_operator_table_and_trace(tmp_path):
    a = torch.randn(64, 64)
    table = prof.top_operators(lambda: a @ a, top=3, trace=tmp_path / "trace.json")
    assert "aten::mm" in table and "Self CPU" in table
    assert (tmp_path / "trace.json").stat().st_size > 0


def test_each_unet_call_reads_the_unets_weights_once(smoke_pipeline):
    pipe = smoke_pipeline
    unet_bytes = sum(p.numel() * p.element_size() for m in pipe.unet.modules() if not isinstance(m, torch.nn.Embedding)
                     for p in m.parameters(recurse=False))
    read = prof.weight_bytes_read(pipe, lambda: pipe("a red circle", num_inference_steps=3, upsample=False,
                                                     generator=torch.Generator().manual_seed(0), output_type="pt"))
    assert read["denoise"] == 3 * unet_bytes  # guidance is batched: one call per step
    assert read["clip"] > 0 and read["llm"] == 0  # no LLM without upsampling


def test_roofline_points_place_every_stage(smoke_pipeline):
    points = prof.roofline_points(smoke_pipeline, ["a red circle", "a blue square"], repeats=1, num_inference_steps=2)
    assert [p["stage"] for p in points] == ["clip", "llm", "denoise"]
    for p in points:
        assert p["batch_size"] == 2 and p["flops"] > 0 and p["bytes"] > 0 and p["ms"] > 0
        assert p["intensity"] == pytest.approx(p["flops"] / p["bytes"])
        assert p["gflop_per_s"] == pytest.approx(p["flops"] / (p["ms"] * 1e6))


def test_activation_traffic_counts_what_each_leaf_layer_reads_and_writes(smoke_pipeline):
    pipe = smoke_pipeline
    conv_in = pipe.unet.conv_in
    unet_bytes = sum(p.numel() * p.element_size() for m in pipe.unet.modules() if not isinstance(m, torch.nn.Embedding)
                     for p in m.parameters(recurse=False))
    seen = []
    hook = conv_in.register_forward_hook(lambda m, a, o: seen.append(a[0].numel() * 4 + o.numel() * 4))

    def call():
        pipe("a red circle", num_inference_steps=1, upsample=False, generator=torch.Generator().manual_seed(0),
             output_type="pt")
    try:
        weights = prof.weight_bytes_read(pipe, call)["denoise"]
        both = prof.weight_bytes_read(pipe, call, activations=True)["denoise"]
    finally:
        hook.remove()
    assert weights == unet_bytes and both > weights + seen[-1]  # conv_in's input and output, and every other layer's


def test_the_throughput_limit_is_a_roofline_per_stage(smoke_pipeline):
    out = prof.throughput_limit(smoke_pipeline, ["a red circle", "a blue square"], peak_gflops=10.0,
                                bandwidth_gbs=5.0, num_inference_steps=2)
    flops, moved = out["flops_per_image"], out["bytes_per_image"]
    seconds = sum(max(flops[k] / 10e9, moved[k] / 5e9) for k in flops)
    assert out["limit_images_per_s"] == pytest.approx(1 / seconds)
    assert out["limit_images_per_s"] <= min(out["compute_images_per_s"], out["memory_images_per_s"])
    assert out["compute_images_per_s"] == pytest.approx(10e9 / sum(flops.values()))
    assert set(out["bound_by"].values()) <= {"compute", "memory"} and out["batch_size"] == 2
