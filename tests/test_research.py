"""The experiments of notebook 06 (llmimg.research: upsampling, llm_speed, transfer) on the smoke stages."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from llmimg.core.data.geneval import GenEvalWorld
from llmimg.core.evaluation import clip_score, cmmd, compare_rates
from llmimg.core.evaluation.protocol import EvalSet, ProtocolScore, load_eval_set, score_protocol
from llmimg.pipelines import protocol
from llmimg.research import llm_speed as S
from llmimg.research import transfer as K
from llmimg.research import upsampling as C
from llmimg.stages import generator as G


@pytest.fixture(scope="module")
def geneval_pipes(smoke_cache):
    """The GenEval-shaped world's smoke pipeline and the same with the generator trained on prompts."""
    return protocol.as_pipelines(*protocol.stages("smoke", progress=False))


def one_per_category(split: str) -> EvalSet:
    return protocol.subset(load_eval_set(split), 1)


def test_upsampling_experiment_draws_four_settings_on_the_same_prompts(geneval_pipes):
    pipe, prompt_pipe = geneval_pipes
    eval_set = one_per_category("heldout")
    reference = np.stack([s.image for s in GenEvalWorld().samples(eval_set.n_images, "heldout")])
    pipes = {"descriptions": pipe, "prompts": prompt_pipe}
    table, scores, clip_scores = C.upsampling_experiment(pipes, eval_set, reference, num_inference_steps=2)
    assert list(zip(table["trained on"], table["drawn from"])) == [(t, g) for t in C.TRAINING_TEXTS
                                                                   for g in C.DRAWN_FROM]
    assert (table["n_prompts"] == 6).all() and (table["n_images"] == 24).all()  # GenEval's six categories
    ids = {score.item_ids for score in scores.values()}
    assert len(ids) == 1  # every setting on the same prompts: they pair
    assert all(len(v) == len(eval_set) for v in clip_scores.values())
    assert table["overall"].between(0, 1).all() and table["clip_score"].between(0, 100).all()
    assert (table[["overall_se", "clip_score_se", "cmmd_se"]] >= 0).all().all()
    again, _, _ = C.upsampling_experiment(pipes, eval_set, reference, num_inference_steps=2)
    pd.testing.assert_frame_equal(table, again)  # seeded: the same numbers on CPU


def test_clip_scores_per_prompt_average_the_images_of_each_prompt(geneval_pipes):
    pipe = geneval_pipes[0]
    eval_set = one_per_category("val")
    images = np.stack([s.image for s in GenEvalWorld().samples(eval_set.n_images, "val")])
    per_prompt = C.per_prompt_clip_scores(pipe.text_encoder, images, eval_set)
    clip = pipe.text_encoder
    overall = clip_score(clip.encode_image(images), clip.encode_text(eval_set.image_prompts()))
    assert per_prompt.shape == (len(eval_set),) and per_prompt.mean() == pytest.approx(overall, rel=1e-5)


def test_cmmd_with_se_is_the_set_distance_and_a_seeded_bootstrap():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    value, se = C.cmmd_with_se(x, y, images_per_prompt=4, draws=50)
    assert value == pytest.approx(cmmd(x, y)) and se > 0
    assert C.cmmd_with_se(x, y, images_per_prompt=4, draws=50) == (value, se)
    assert C.cmmd_with_se(y, y, images_per_prompt=3, draws=20)[0] == pytest.approx(0.0, abs=1e-9)


def made_up(eval_set: EvalSet, rate: float) -> ProtocolScore:
    """A score whose every image is right (rate 1) or wrong (rate 0)."""
    return score_protocol(eval_set, np.full(eval_set.n_images, rate))


def test_time_to_target_and_its_bootstrap_on_known_answers():
    eval_set = protocol.subset(load_eval_set("val"), 2)
    table = pd.DataFrame({"setting": ["base", "base", "fast", "fast"], "steps": [1, 2, 1, 2],
                          "ms_per_image": [10.0, 20.0, 5.0, 10.0]})
    scores = {("base", 1): made_up(eval_set, 0), ("base", 2): made_up(eval_set, 1),
              ("fast", 1): made_up(eval_set, 1), ("fast", 2): made_up(eval_set, 1)}
    out = S.time_to_target(table, scores, 0.5, baseline="base", faster="fast", draws=50)
    assert out["ms"] == {"base": 20.0, "fast": 5.0} and out["ratio"] == 4.0
    assert out["ratio_interval"] == (4.0, 4.0) and out["never"] == {"base": 0.0, "fast": 0.0}
    out = S.time_to_target(table, scores, 1.01, baseline="base", faster="fast", draws=50)
    assert out["ms"] == {"base": None, "fast": None} and out["ratio"] is None and out["ratio_interval"] is None
    assert out["never"] == {"base": 1.0, "fast": 1.0}
    # With resampling, each draw's overall is GenEval's mean of six; draw 0 is the sample itself.
    mixed = score_protocol(eval_set, np.random.default_rng(1).integers(0, 2, eval_set.n_images))
    assert S._resampled_overall([mixed], draws=10, seed=0)[0, 0] == pytest.approx(mixed.overall.rate)


def test_equal_time_pairs_give_the_baseline_at_least_the_same_time():
    eval_set = protocol.subset(load_eval_set("val"), 2)
    table = pd.DataFrame({"setting": ["a", "a", "b", "b"], "steps": [1, 2, 1, 2],
                          "ms_per_image": [5.0, 10.0, 10.0, 20.0]})
    scores = {("a", 1): made_up(eval_set, 1), ("a", 2): made_up(eval_set, 1),
              ("b", 1): made_up(eval_set, 0), ("b", 2): made_up(eval_set, 0)}
    rows = S.equal_time_pairs(table, scores, "a", "b")
    assert [(r["a steps"], r["b steps"]) for r in rows] == [(1, 1), (2, 1)]
    assert all(r["b ms"] >= r["a ms"] and r["difference"] == 1.0 and r["verdict"] == "a ahead" for r in rows)


def test_speed_experiment_times_and_scores_every_point(geneval_pipes):
    pipe, prompt_pipe = geneval_pipes
    eval_set = one_per_category("val")
    settings = {"with LLM": (pipe, True), "without LLM": (prompt_pipe, False)}
    table, scores = S.speed_experiment(settings, eval_set, steps=(1, 2))
    assert list(table["setting"]) == ["with LLM"] * 2 + ["without LLM"] * 2 and list(table["steps"]) == [1, 2] * 2
    assert (table["ms_per_image"] > 0).all() and set(scores) == {("with LLM", 1), ("with LLM", 2),
                                                               ("without LLM", 1), ("without LLM", 2)}
    assert table["overall"].tolist() == [scores[k].overall.rate for k in scores]


def test_transfer_encoders(smoke_llm):
    pretrained = K.transfer_encoder("pretrained LLM", smoke_llm)
    scratch = K.transfer_encoder("from scratch", smoke_llm)
    body = smoke_llm.lm.gpt2.transformer
    for (name, p), q in zip(pretrained.gpt2.named_parameters(), body.parameters()):
        assert torch.equal(p, q), name
        assert p.data_ptr() != q.data_ptr()  # a copy: training the generator cannot touch the LLM
    assert not torch.equal(scratch.gpt2.wte.weight, body.wte.weight)
    assert pretrained.width == scratch.width == body.config.n_embd
    assert K.transfer_encoder("CLIP text", smoke_llm) is smoke_llm.clip  # the pipeline's own text states
    states, mask = pretrained.token_states(["a red circle", ""])
    assert states.shape == (2, mask.shape[1], pretrained.width) and mask[1].sum() == 2
    with pytest.raises(ValueError, match="pretrained LLM"):
        K.transfer_encoder("bert", smoke_llm)


def test_transfer_training_moves_only_what_it_should(smoke_llm):
    config, steps = K.transfer_config("smoke")
    assert steps[-1] == config.train.steps and len(steps) == 4
    before = {k: v.clone() for k, v in smoke_llm.lm.gpt2.state_dict().items()}
    clip_before = {k: v.clone() for k, v in smoke_llm.clip.model.state_dict().items()}
    curves = {}
    for kind in K.TRANSFER_KINDS:
        curve, gen = K.train_transfer(kind, smoke_llm, config, steps, n_eval=4, num_inference_steps=2,
                                      progress=False)
        assert [row["step"] for row in curve] == list(steps)
        assert all(0 <= row["all_correct"] <= 1 and 0 <= row["mean_attribute"] <= 1 for row in curve)
        for row in curve:  # per image, for pairing: all-correct 0/1 and the attributes right of four
            assert len(row["per_image"]) == len(row["attributes_right"]) == 4
            assert row["all_correct"] == row["per_image"].count("1") / 4
            assert all(int(d) <= 4 for d in row["attributes_right"])
            assert ("4" in row["attributes_right"]) >= ("1" in row["per_image"])
        curves[kind] = gen
    frozen, learned = (curves[k].text_encoder.gpt2 for k in ("pretrained LLM", "from scratch"))
    assert curves["CLIP text"].text_encoder is smoke_llm.clip
    assert all(torch.equal(v, clip_before[k]) for k, v in smoke_llm.clip.model.state_dict().items())
    assert torch.equal(frozen.wte.weight, smoke_llm.lm.gpt2.transformer.wte.weight)  # frozen stays as trained
    assert all(torch.equal(v, smoke_llm.lm.gpt2.state_dict()[k]) for k, v in before.items())
    fresh = K.transfer_encoder("from scratch", smoke_llm)
    assert not torch.equal(learned.wte.weight, fresh.gpt2.wte.weight)  # trained along with the UNet


def test_transfer_curve_is_cached(smoke_llm, smoke_cache):
    def folders() -> set[str]:
        return {p.name for p in (smoke_cache / "smoke").glob("transfer-*")}

    before = folders()
    first = K.transfer_curve("from scratch", "smoke", progress=False, n_eval=4)
    trained = folders() - before
    assert len(trained) <= 1  # one folder (none if an earlier test trained this very run)
    assert K.transfer_curve("from scratch", "smoke", progress=False, n_eval=4) == first
    assert folders() == before | trained  # the second call trained nothing


def test_prompt_rate_picks_the_training_texts(smoke_clip):
    bank = G.make_bank(G.default_config("smoke"))
    for rate, source in ((1.0, bank.prompts), (0.0, bank.descriptions)):
        config = replace(G.default_config("smoke"), prompt_rate=rate)
        texts = G.make_batch_fn(config, None, bank)(0)["texts"]
        assert all(t == "" or t in source for t in texts)
        assert any(t != "" for t in texts)
    # With a text encoder the batch holds its states, not texts (and the bank rows it drew,
    # which joint training pairs with the LLM's rows of the same scenes).
    b = G.make_batch_fn(G.default_config("smoke"), smoke_clip, bank)(0)
    assert {"latents", "noise", "timesteps", "states", "mask", "index"} == set(b)
    with pytest.raises(ValueError, match="probability"):
        G.GeneratorConfig(prompt_rate=1.5)


def test_the_transfer_record_pairs_the_encoders_per_seed_and_point(smoke_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="llmimg experiment transfer --profile smoke"):
        K.load("smoke")
    with pytest.raises(ValueError, match="two different seeds"):
        K.run("smoke", seeds=(0, 0))
    record = K.run("smoke", seeds=(0, 1), progress=False)
    assert K.load("smoke") == json.loads(json.dumps(record))
    assert set(record["runs"]) == set(K.TRANSFER_KINDS) and record["seeds"] == [0, 1]
    assert len(record["paired"]) == 2 * len(K.COMPARED) * len(record["steps"])
    row = record["paired"][0]
    a, b = (record["runs"][k][0]["curve"][0] for k in (row["a"], row["b"]))
    assert row["diff"] == pytest.approx(a["mean_attribute"] - b["mean_attribute"])  # four attributes stated each
    assert row["verdict"] in ("within noise", f"{row['a']} ahead", f"{row['b']} ahead")
    summary = record["summary"]["from scratch"]["mean_attribute"]
    finals = [r["curve"][-1]["mean_attribute"] for r in record["runs"]["from scratch"]]
    assert summary["mean"] == pytest.approx(np.mean(finals)) and summary["seed_sd"] >= 0
    out = subprocess.run([sys.executable, "-m", "llmimg", "experiment", "transfer", "--profile", "smoke", "--seeds",
                          "0", "1", "--no-progress"], capture_output=True, text=True, check=True).stdout  # cached
    assert "transfer-smoke.json" in out and "pretrained LLM - from scratch" in out
    K.results_path("smoke").write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match="damaged.*git checkout"):
        K.load("smoke")


def test_compare_rates_calls_noise_noise():
    # 0.60 vs 0.50 on 200 trials each: se = sqrt(.24/200 + .25/200) = 0.0495, a difference of 2.02 se
    sentence = compare_rates("A", 0.60, "B", 0.50, 200)
    assert "+10.0 points" in sentence and "standard error 4.9" in sentence and "a real difference (2.0" in sentence
    assert "within the noise (1.0 standard errors)" in compare_rates("A", 0.55, "B", 0.50, 200)
    assert "no difference" in compare_rates("A", 1.0, "B", 1.0, 50)
    assert "-5.0 points" in compare_rates("A", 0.45, "B", 0.50, 100, 400)
