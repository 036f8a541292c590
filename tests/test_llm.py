"""Stage 2: the ClipCap GPT-2: loss, generation, saving and loading, and the upsampling scores."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmimg import llm as L
from llmimg.checkpoints import CheckpointError
from llmimg.data import ShapesWorld, complete_prompt, describe, parse_description
from llmimg.text import UnknownWordsError, encode


def test_loss_counts_only_description_tokens(smoke_llm):
    lm = smoke_llm.lm
    z = torch.nn.functional.normalize(torch.randn(2, smoke_llm.clip.embed_dim), dim=-1)
    enc = encode(smoke_llm.tokenizer, ["a large red circle in the top left", "a small blue cross in the center"],
                 check=False)
    task = torch.tensor([0, 0])
    context = smoke_llm.context(prompts=["a red circle", "a small blue cross and a square"])
    with torch.no_grad():
        loss = lm(z, task, enc["input_ids"], enc["attention_mask"], context)
        # independent computation, one row at a time with the prompt's padding cut off: the
        # cross-entropy of tokens 1.. from the positions before them
        terms = []
        for row in range(2):
            real = context.prompt_ids[row][context.prompt_ids[row] != 0][None]
            embeds = torch.cat([lm.mapper(z[row:row + 1], task[row:row + 1]),
                                lm.gpt2.get_input_embeddings()(real),
                                lm.gpt2.get_input_embeddings()(enc["input_ids"][row:row + 1])], 1)
            logits = lm.gpt2(inputs_embeds=embeds).logits
            p = embeds.shape[1] - enc["input_ids"].shape[1] + 1  # everything up to and including <bos>
            targets = enc["input_ids"][row, 1:]
            ce = torch.nn.functional.cross_entropy(logits[0, p - 1:-1], targets, reduction="none")
            terms.append(ce[enc["attention_mask"][row, 1:].bool()])
        assert loss.item() == pytest.approx(torch.cat(terms).mean().item(), rel=1e-5)


def test_padding_inside_the_context_changes_nothing(smoke_llm):
    """A prompt read in a batch beside a longer one is read as if it were alone."""
    prompts = ["a circle", "a large red circle in the top left and a small blue cross in the center"]
    z = smoke_llm.clip.encode_text(prompts)
    together = smoke_llm.generate(z, "upsample", context=smoke_llm.context(prompts=prompts), do_sample=False)
    alone = smoke_llm.generate(z[:1], "upsample", context=smoke_llm.context(prompts=prompts[:1]), do_sample=False)
    assert together[0] == alone[0]
    assert L.positions(torch.tensor([[1, 1, 0, 0, 1, 1]])).tolist() == [[0, 1, 0, 0, 2, 3]]


def test_a_mixed_batch_reads_each_rows_own_context(smoke_llm):
    images = np.stack([s.image for s in ShapesWorld(seed=2).samples(2, "val")])
    prompts = ["a red circle", "a cross"]
    patches = smoke_llm.clip.patch_tokens(images)
    assert patches.shape == (2, smoke_llm.clip.n_patches, smoke_llm.clip.patch_width)
    mixed = L.Context(prompt_ids=smoke_llm.context(prompts=prompts).prompt_ids, patches=patches,
                      is_image=torch.tensor([True, False]))
    embeds, mask = smoke_llm.lm.context_embeds(mixed)
    image_row, _ = smoke_llm.lm.context_embeds(L.Context(patches=patches[:1]))
    prompt_row, prompt_mask = smoke_llm.lm.context_embeds(L.Context(prompt_ids=mixed.prompt_ids[1:]))
    torch.testing.assert_close(embeds[0], image_row[0])
    torch.testing.assert_close(embeds[1, :prompt_row.shape[1]], prompt_row[0])
    assert mask[0].all() and mask[1].sum() == prompt_mask.sum() == 4  # <bos> a cross <eos>


def test_generation_modes(smoke_llm):
    prompts = ["a red circle", "a small square in the top left and a cross"]
    sampled = smoke_llm.upsample(prompts, seed=3)
    assert len(sampled) == 2 and all(isinstance(t, str) for t in sampled)
    assert smoke_llm.upsample(prompts, seed=3) == sampled  # seeded sampling repeats
    greedy = smoke_llm.upsample(prompts, do_sample=False)
    assert len(smoke_llm.upsample(prompts, do_sample=False, num_beams=3)) == 2
    assert len(smoke_llm.upsample(prompts, temperature=0.7, top_k=5, seed=1)) == 2
    images = np.stack([s.image for s in ShapesWorld(seed=1).samples(3, "val")])
    assert len(smoke_llm.caption(images)) == 3


def test_bad_generation_arguments(smoke_llm):
    z = smoke_llm.clip.encode_text(["a circle"])
    with pytest.raises(ValueError, match="unknown task"):
        smoke_llm.generate(z, "paint")
    with pytest.raises(ValueError, match="temperature must be positive"):
        smoke_llm.generate(z, "upsample", temperature=0)
    with pytest.raises(UnknownWordsError, match="'blorb'"):
        smoke_llm.upsample(["a blorb"])
    with pytest.raises(ValueError, match="reads a context"):
        smoke_llm.generate(z, "upsample")
    with pytest.raises(ValueError, match="either prompts or images"):
        smoke_llm.context()


def test_save_load_round_trip_through_ours_and_transformers(smoke_llm, tmp_path):
    path = smoke_llm.save(tmp_path / "llm")
    z = smoke_llm.clip.encode_text(["a green diamond"])
    ours = L.load(path, smoke_llm.clip)
    assert ours.upsample(["a green diamond"], do_sample=False) == smoke_llm.upsample(["a green diamond"],
                                                                                     do_sample=False)
    gpt2 = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    mapper = L.PrefixMapper.from_pretrained(path / "prefix_mapper")
    ids = tok(["a red circle"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(gpt2(ids).logits, smoke_llm.lm.gpt2(ids).logits, atol=1e-5)
        task = torch.zeros(1, dtype=torch.long)
        assert torch.allclose(mapper(z, task), smoke_llm.lm.mapper(z, task), atol=1e-6)


def test_load_finds_its_clip_in_the_cache(smoke_llm):
    again = L.load(smoke_llm.path)
    assert again.clip.path == smoke_llm.clip.path


def test_missing_and_damaged_checkpoints(smoke_llm, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*llmimg train llm"):
        L.load(tmp_path / "nothing", smoke_llm.clip)
    path = smoke_llm.save(tmp_path / "llm")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(CheckpointError, match="not a loadable LLM"):
        L.load(path, smoke_llm.clip)
    (path / "prefix_mapper" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="prefix_mapper/config.json missing"):
        L.load(path, smoke_llm.clip)


def test_short_training_run_lowers_the_loss(smoke_llm):
    losses = [h["loss"] for h in smoke_llm.history]
    assert losses[-1] < 0.8 * losses[0]


def test_open_attributes():
    scene = parse_description("a large red circle in the top left and a small blue square in the center")
    assert sorted(L.open_attributes("a square and a red circle", scene)) == sorted(
        [("size", "small"), ("colour", "blue"), ("position", "center"), ("size", "large"),
         ("position", "top left")])
    assert L.open_attributes("a green circle and a square", scene) == []  # unfaithful
    assert L.open_attributes("a circle", scene) == []  # wrong count


def test_scores_of_the_oracle_and_of_wrong_outputs():
    prompts = [s.prompt for s in ShapesWorld(seed=5).samples(400, "val")]
    rng = np.random.default_rng(1)
    oracle = [describe(complete_prompt(p, rng)) for p in prompts]
    good = L.upsampling_scores(prompts, oracle)
    assert good["valid_rate"] == 1.0 and good["faithfulness"] == 1.0
    assert good["faithfulness_by_objects"] == {"1": 1.0, "2": 1.0}
    assert good["open_attribute_tv"] < 2 * good["open_attribute_tv_floor"] + 0.02
    # always writing "large": valid and faithful only where size was open or large, and far from the data's sizes
    biased = [t.replace("small", "large") for t in oracle]
    bad = L.upsampling_scores(prompts, biased)
    assert bad["faithfulness"] < 0.9 and bad["open_attribute_tv_per_attribute"]["size"] > 0.4
    broken = L.upsampling_scores(prompts[:2], ["a circle", "nonsense"])
    assert broken["valid_rate"] == 0.0 and broken["faithfulness"] == 0.0


def test_caption_scores():
    scenes = [s.scene for s in ShapesWorld(seed=6).samples(3, "val")]
    right = [describe(s) for s in scenes]
    assert L.caption_scores(scenes, right) == {"caption_valid_rate": 1.0, "caption_accuracy": 1.0}
    wrong = [right[0], right[2], "a circle"]
    scores = L.caption_scores(scenes, wrong)
    assert scores["caption_valid_rate"] == pytest.approx(2 / 3)
    assert scores["caption_accuracy"] == pytest.approx(1 / 3) or right[1] == right[2]


def test_total_variation():
    assert L.total_variation(Counter(a=1, b=1), Counter(a=2, b=2)) == 0.0
    assert L.total_variation(Counter(a=1), Counter(b=1)) == 1.0
    assert np.isnan(L.total_variation(Counter(), Counter(a=1)))


def test_upsampler_redraws_only_unfaithful_descriptions(smoke_llm, monkeypatch):
    """The checker keeps faithful draws, redraws the others (only those rows, next seed), and stops at max_tries."""
    prompts = ["a red circle", "a blue square in the top left"]
    script = [["a large red circle in the center", "a small green square in the top left"],  # 2nd contradicts
              ["a small blue cross in the top left"],  # still wrong
              ["a large blue square in the top left"]]  # right
    calls = []

    def fake_generate(z, task, *, context=None, seed=None, **kwargs):
        calls.append((len(z), context.prompt_ids.shape[0], seed))
        return list(script[len(calls) - 1])

    monkeypatch.setattr(smoke_llm, "generate", fake_generate)
    z = smoke_llm.clip.encode_text(prompts)
    out, draws = smoke_llm.upsample_from(z, prompts, seed=5, return_draws=True)
    assert out == ["a large red circle in the center", "a large blue square in the top left"]
    assert draws == [1, 3] and calls == [(2, 2, 5), (1, 1, 6), (1, 1, 7)]
    calls.clear()
    out = smoke_llm.upsample_from(z, prompts, seed=5, max_tries=2)
    assert out[1] == "a small blue cross in the top left"  # gave up after 2 draws, kept the last
    calls.clear()
    assert smoke_llm.upsample_from(z, prompts, do_sample=False)[1] == "a small green square in the top left"
    assert len(calls) == 1  # greedy is deterministic: drawn once
    with pytest.raises(ValueError, match="max_tries"):
        smoke_llm.upsample_from(z, prompts, max_tries=0)
