"""The experiments of notebook 06 (llmimg.research: upsampling, llm_speed, transfer) on the smoke stages."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from llmimg.core.data import ShapesWorld
from llmimg.core.evaluation import compare_rates
from llmimg.research import llm_speed as S
from llmimg.research import transfer as K
from llmimg.research import upsampling as C
from llmimg.stages import generator as G


def heldout(n: int) -> list:
    return list(ShapesWorld().samples(n, "heldout"))


def test_text_variants_differ_only_in_the_prompt_rate():
    base = G.default_config("smoke")
    for kind, rate in C.TRAINING_TEXTS.items():
        variant = C.text_variant(kind, "smoke")
        assert variant.prompt_rate == rate
        # only the description generator (the pipeline's own) records a learning curve
        same = {"prompt_rate": 0.0, "curve_every": 0}
        assert {**variant.as_dict(), **same} == {**base.as_dict(), **same}
        assert variant.curve_every == (base.curve_every if kind == "descriptions" else 0)
        assert (variant.identity() == base.identity()) == (kind == "descriptions")
    with pytest.raises(ValueError, match="prompts, descriptions"):
        C.text_variant("captions", "smoke")
    with pytest.raises(ValueError, match="probability"):
        G.GeneratorConfig(prompt_rate=1.5)


def test_the_prompt_generator_is_another_model(smoke_clip):
    keys = {kind: G.key(C.text_variant(kind, "smoke"), smoke_clip) for kind in C.TRAINING_TEXTS}
    assert keys["descriptions"] == G.key(G.default_config("smoke"), smoke_clip)
    assert keys["prompts"] != keys["descriptions"]


def test_prompt_rate_picks_the_training_texts(smoke_clip):
    bank = G.make_bank(G.default_config("smoke"))
    for rate, source in ((1.0, bank.prompts), (0.0, bank.descriptions)):
        config = C.text_variant("prompts" if rate else "descriptions", "smoke")
        texts = G.make_batch_fn(config, None, bank)(0)["texts"]
        assert all(t == "" or t in source for t in texts)
        assert any(t != "" for t in texts)
    # With a text encoder the batch holds its states, not texts (and the bank rows it drew,
    # which joint training pairs with the LLM's rows of the same scenes).
    b = G.make_batch_fn(G.default_config("smoke"), smoke_clip, bank)(0)
    assert {"latents", "noise", "timesteps", "states", "mask", "index"} == set(b)


@pytest.fixture(scope="module")
def variants(smoke_llm):
    return {kind: C.variant_generator(kind, "smoke", progress=False) for kind in C.TRAINING_TEXTS}


def test_upsampling_experiment_table(smoke_llm, variants):
    samples = heldout(6)
    table = C.upsampling_experiment(smoke_llm, variants, samples, num_inference_steps=2)
    assert len(table) == 2 * len(C.TRAINING_TEXTS)
    assert set(table["trained on"]) == set(C.TRAINING_TEXTS)
    assert set(table["drawn from"]) == {"raw prompt", "LLM description"}
    for column in ("all_correct", *C.ATTRIBUTES, "count"):
        assert table[column].between(0, 1).all(), column
    assert (table["cmmd"] >= -1e-6).all() and table["clip_score"].between(0, 100).all()
    again = C.upsampling_experiment(smoke_llm, variants, samples, num_inference_steps=2)
    pd.testing.assert_frame_equal(table, again)  # seeded: the same numbers on CPU


def test_speed_experiment_and_time_to_quality(smoke_llm, variants):
    settings = {"with LLM": (variants["descriptions"], True), "without LLM": (variants["prompts"], False)}
    table = S.speed_experiment(smoke_llm, settings, heldout(4), steps=(1, 2))
    assert list(table["setting"]) == ["with LLM"] * 2 + ["without LLM"] * 2
    assert (table["ms_per_image"] > 0).all()
    made_up = pd.DataFrame({"setting": ["a", "a", "b", "b"], "ms_per_image": [10.0, 20.0, 5.0, 40.0],
                            "all_correct": [0.2, 0.5, 0.1, 0.4]})
    assert S.time_to_quality(made_up, 0.4) == {"a": 20.0, "b": 40.0}
    assert S.time_to_quality(made_up, 0.6) == {"a": None, "b": None}


def test_transfer_encoders(smoke_llm):
    pretrained = K.transfer_encoder("pretrained LLM", smoke_llm)
    scratch = K.transfer_encoder("from scratch", smoke_llm)
    body = smoke_llm.lm.gpt2.transformer
    for (name, p), q in zip(pretrained.gpt2.named_parameters(), body.parameters()):
        assert torch.equal(p, q), name
        assert p.data_ptr() != q.data_ptr()  # a copy: training the generator cannot touch the LLM
    assert not torch.equal(scratch.gpt2.wte.weight, body.wte.weight)
    assert pretrained.width == scratch.width == body.config.n_embd
    states, mask = pretrained.token_states(["a red circle", ""])
    assert states.shape == (2, mask.shape[1], pretrained.width) and mask[1].sum() == 2
    with pytest.raises(ValueError, match="pretrained LLM"):
        K.transfer_encoder("bert", smoke_llm)


def test_transfer_training_moves_only_what_it_should(smoke_llm):
    config, steps = K.transfer_config("smoke")
    assert steps[-1] == config.train.steps and len(steps) == 4
    before = {k: v.clone() for k, v in smoke_llm.lm.gpt2.state_dict().items()}
    curves = {}
    for kind in K.TRANSFER_KINDS:
        curve, gen = K.train_transfer(kind, smoke_llm, config, steps, n_eval=4, num_inference_steps=2,
                                      progress=False)
        assert [row["step"] for row in curve] == list(steps)
        assert all(0 <= row["all_correct"] <= 1 and 0 <= row["mean_attribute"] <= 1 for row in curve)
        curves[kind] = gen
    frozen, learned = (curves[k].text_encoder.gpt2 for k in K.TRANSFER_KINDS)
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


def test_compare_rates_calls_noise_noise():
    # 0.60 vs 0.50 on 200 trials each: se = sqrt(.24/200 + .25/200) = 0.0495, a difference of 2.02 se
    sentence = compare_rates("A", 0.60, "B", 0.50, 200)
    assert "+10.0 points" in sentence and "standard error 4.9" in sentence and "a real difference (2.0" in sentence
    assert "within the noise (1.0 standard errors)" in compare_rates("A", 0.55, "B", 0.50, 200)
    assert "no difference" in compare_rates("A", 1.0, "B", 1.0, 50)
    assert "-5.0 points" in compare_rates("A", 0.45, "B", 0.50, 100, 400)
