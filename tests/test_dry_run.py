"""The full-size dry run (``llmimg.pipelines.pretrained.dry_run``): real architectures, random weights, measured.

The real sizes are checked on the ``meta`` device (nothing allocated); the measuring code
runs on the same classes shrunk to tiny dimensions, in this process and, through the
command line, in a fresh process per stage.
"""

from __future__ import annotations

import json

import pytest
import torch

from llmimg.cli import main
from llmimg.pipelines.pretrained import architectures as arch
from llmimg.pipelines.pretrained.dry_run import T4_USABLE_BYTES, _in_child, _Settings, dry_run, format_table, t4_fit

STAGE_KEYS = {"model", "what", "params", "weights_fp32_bytes", "weights_fp16_bytes", "baseline_rss_bytes",
              "peak_rss_bytes", "peak_cuda_bytes", "ms_per_call", "threads", "seconds"}


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.fixture(scope="module")
def shrunk() -> dict:
    return dry_run(shrink=True, isolate=False, steps=(2, 1), repeats=2, candidates=3, new_tokens=5)


def test_the_real_architectures_have_their_published_parameter_counts():
    # ViT-B/32 151.28 M, Qwen2.5-0.5B 494.0 M, SD 2 UNet 865.9 M, VAE 83.65 M, OpenCLIP-H text (23 layers) 340.4 M
    assert arch.count_parameters() == arch.PUBLISHED_PARAMETERS
    assert arch.PUBLISHED_PARAMETERS == {"clip": 151_277_313, "llm": 494_032_768, "text_encoder": 340_387_840,
                                         "unet": 865_910_724, "vae": 83_653_863}


def test_the_real_llm_config_is_qwen25_05b():
    with torch.device("meta"):
        config = arch.build_llm().config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (896, 4864, 24)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (14, 2, 151936)
    assert config.tie_word_embeddings and config.max_position_embeddings == 32768
    assert config.rope_parameters["rope_theta"] == 1e6


def test_the_shrunk_run_returns_every_stage_and_the_total(shrunk):
    assert set(shrunk["stages"]) == {"clip", "llm", "generator"}
    for name, stage in shrunk["stages"].items():
        assert STAGE_KEYS <= set(stage), name
        assert stage["weights_fp32_bytes"] == 4 * stage["params"] == 2 * stage["weights_fp16_bytes"]
        assert stage["peak_rss_bytes"] >= stage["baseline_rss_bytes"] > 0
    generator = shrunk["stages"]["generator"]
    assert set(generator["ms_per_call"]) == set(generator["stage_ms"]) == {"1", "2"}
    assert set(generator["stage_ms"]["1"]) == {"text_encoder", "denoise", "vae_decode"}
    assert all(ms > 0 for ms in generator["ms_per_call"].values())
    total = shrunk["total"]
    assert total["params"] == sum(s["params"] for s in shrunk["stages"].values())
    assert total["ms_per_call"]["2"] == pytest.approx(shrunk["stages"]["clip"]["ms_per_call"]
                                                      + shrunk["stages"]["llm"]["ms_per_call"]
                                                      + generator["ms_per_call"]["2"])
    assert set(total["end_to_end_ms"]) == {"2"}
    assert shrunk["settings"]["steps"] == [1, 2] and shrunk["device"] == "cpu" and shrunk["torch"] == torch.__version__
    assert {"date", "threads", "dtype", "t4_fit", "memory_method", "load_average", "cpu_count"} <= set(shrunk)
    json.dumps(shrunk)  # plain JSON


def test_parameter_counts_are_exact(shrunk):
    counts = arch.count_parameters(shrink=True)  # on the meta device: the models are built again, nothing allocated
    stages = shrunk["stages"]
    assert stages["clip"]["params"] == counts["clip"]
    assert stages["llm"]["params"] == counts["llm"]
    for part in arch.GENERATOR_PARTS:
        assert stages["generator"]["components"][part]["params"] == counts[part]
    model = arch.build_clip(shrink=True)
    assert stages["clip"]["params"] == sum(p.numel() for p in model.parameters())


def test_the_llm_writes_exactly_the_asked_number_of_tokens(shrunk):
    llm = shrunk["stages"]["llm"]
    assert (llm["new_tokens"], llm["rows"]) == (5, 3)
    assert llm["ms_per_new_token"] == pytest.approx(llm["ms_per_call"] / 5)
    assert llm["prompt_tokens"] > 100  # the instruction in the chat template, one token per byte


def test_the_table_shows_every_stage_and_the_t4_margin(shrunk):
    table = format_table(shrunk)
    for name in ("clip", "llm", "generator", "total", "T4", "margin", "steps 1, 2"):
        assert name in table


def test_t4_fit_counts_float16_weights_and_measured_activations():
    gib = 1024 ** 3
    total = {"params": 1_000_000_000, "weights_fp16_bytes": 2 * gib, "baseline_rss_bytes": 1 * gib,
             "peak_rss_bytes": 8 * gib, "peak_cuda_bytes": None}
    fit = t4_fit(total, "float32")  # 8 - 1 GiB baseline - 4e9 B float32 weights = activations
    assert fit["activations_bytes"] == 7 * gib - 4_000_000_000
    assert fit["needed_bytes"] == 2 * gib + fit["activations_bytes"]
    assert fit["margin_bytes"] == T4_USABLE_BYTES - fit["needed_bytes"] and fit["fits"]
    assert not t4_fit({**total, "peak_cuda_bytes": 16 * gib}, "float16")["fits"]


def test_the_cli_prints_json(capsys):
    assert run(["pretrained", "dry-run", "--shrink", "--json", "--steps", "1", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["stages"]) == {"clip", "llm", "generator"} and out["settings"]["shrink"]
    assert out["stages"]["generator"]["ms_per_call"].keys() == {"1"}
    assert out["t4_fit"]["fits"]


def test_a_stage_measured_in_its_own_process_reports_that_process_memory():
    settings = _Settings(steps=[1], size=32, device="cpu", dtype="float32", repeats=1, candidates=2, new_tokens=2,
                         seed=0, shrink=True)
    result = _in_child("clip", settings)
    assert result["params"] == arch.count_parameters(shrink=True)["clip"]
    assert result["peak_rss_bytes"] >= result["baseline_rss_bytes"] > 0


@pytest.mark.parametrize("argv, words", [
    (["--size", "100"], "multiple of 32"),
    (["--steps", "0"], "between 1 and 50"),
    (["--repeats", "x"], "whole number"),
    (["--device", "tpu"], "invalid choice"),
    (["--dtype", "float16", "--device", "cpu"], "float16 on the CPU is refused"),
])
def test_bad_arguments_are_one_line_errors(argv, words, capsys):
    assert run(["pretrained", "dry-run", "--shrink", *argv]) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("bad, words", [
    ({"steps": ()}, "steps"), ({"steps": (0,)}, "steps"), ({"size": 48}, "multiple of 32"),
    ({"repeats": 0}, "repeats"), ({"candidates": True}, "candidates"), ({"new_tokens": 10_000}, "new_tokens"),
])
def test_bad_settings_are_refused_before_anything_is_built(bad, words):
    with pytest.raises(ValueError, match=words):
        dry_run(shrink=True, isolate=False, **bad)
