"""Stage 2: the ClipCap GPT-2: loss, generation, saving and loading, and the upsampling scores."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmimg.core import seeding
from llmimg.stages import llm as L
from llmimg.core.store import CheckpointError
from llmimg.core.data import (SHAPES, Scene, ShapesWorld, complete_prompt, describe, describe_in_prompt_order,
                         parse_description, parse_prompt)
from llmimg.core.evaluation import judge_images, standard_error
from llmimg.core.text import EOS_ID, PAD_ID, UnknownWordsError, decode, encode, train_tokenizer


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
    for temperature in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            smoke_llm.upsample(["a circle"], temperature=temperature)
    for tokens in (0, 10_000):
        with pytest.raises(ValueError, match="max_new_tokens must be between 1 and 32"):
            smoke_llm.upsample(["a circle"], max_new_tokens=tokens)
    with pytest.raises(ValueError, match="beam search is deterministic"):
        smoke_llm.upsample(["a circle"], num_beams=2)
    with pytest.raises(TypeError, match="list of prompts"):
        smoke_llm.upsample("a circle")
    with pytest.raises(UnknownWordsError, match="'blorb'"):
        smoke_llm.upsample(["a blorb"])
    with pytest.raises(ValueError, match="reads a context"):
        smoke_llm.generate(z, "upsample")
    with pytest.raises(ValueError, match="either prompts or images"):
        smoke_llm.context()


def test_save_load_round_trip_through_ours_and_transformers(smoke_llm, tmp_path):
    path = smoke_llm.save_pretrained(tmp_path / "llm")
    z = smoke_llm.clip.encode_text(["a green diamond"])
    ours = L.ShapesLLM.from_pretrained(path, smoke_llm.clip)
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
    again = L.ShapesLLM.from_pretrained(smoke_llm.path)
    assert again.clip.path == smoke_llm.clip.path


def test_missing_and_damaged_checkpoints(smoke_llm, tmp_path, saved_before_records):
    with pytest.raises(CheckpointError, match="does not exist.*llmimg train llm"):
        L.ShapesLLM.from_pretrained(tmp_path / "nothing", smoke_llm.clip)
    path = smoke_llm.save_pretrained(tmp_path / "llm")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(CheckpointError, match=r"'llm' is damaged: model.safetensors has 64 bytes.*llmimg train llm"):
        L.ShapesLLM.from_pretrained(path, smoke_llm.clip)  # the manifest's record of the file
    saved_before_records(path)
    with pytest.raises(CheckpointError, match="not a loadable LLM"):  # without a record, the loader finds it
        L.ShapesLLM.from_pretrained(path, smoke_llm.clip)
    (path / "prefix_mapper" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="prefix_mapper/config.json missing"):
        L.ShapesLLM.from_pretrained(path, smoke_llm.clip)


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


def test_the_tv_distance_has_a_bootstrap_se_and_a_paired_difference():
    prompts = [s.prompt for s in ShapesWorld(seed=5).samples(400, "val")]
    rng = np.random.default_rng(1)
    oracle = [describe(complete_prompt(p, rng)) for p in prompts]
    biased = [t.replace("small", "large") for t in oracle]
    good, bad = L.upsampling_scores(prompts, oracle), L.upsampling_scores(prompts, biased)
    assert 0 < good["open_attribute_tv_se"] < 0.05 and 0 < bad["open_attribute_tv_se"] < 0.05
    small = L.upsampling_scores(prompts[:100], oracle[:100])
    assert small["open_attribute_tv_se"] > good["open_attribute_tv_se"]  # a quarter of the prompts: a wider error
    assert L.upsampling_scores(prompts, oracle) == good  # seeded: the same draws every time
    same = L.tv_difference(prompts, oracle, oracle)
    assert same["diff"] == 0.0 and same["se"] == 0.0
    d = L.tv_difference(prompts, biased, oracle)
    assert d["tv_a"] == pytest.approx(bad["open_attribute_tv"])
    assert d["tv_b"] == pytest.approx(good["open_attribute_tv"])
    assert d["diff"] == pytest.approx(d["tv_a"] - d["tv_b"]) and d["diff"] > 4 * d["se"] > 0  # "large" always: real
    with pytest.raises(ValueError, match="one description per prompt"):
        L.tv_difference(prompts, oracle[:3], oracle)


def test_the_planners_tv_reads_open_attributes_in_prompt_order_against_the_oracle_planner():
    from llmimg.core.data.geneval import plan_layout
    from llmimg.core.evaluation.protocol import load_eval_set

    assert L.planner_open_attributes("a red circle to the left of a square", "a small blue square in the center and "
                                     "a large red circle in the middle left") == [
        ("size", "large"), ("position", "middle left"), ("colour", "blue"), ("size", "small"), ("position", "center")]
    assert L.planner_open_attributes("three red circles", "a small red circle in the center") == []  # a miscount
    assert L.planner_open_attributes("three red circles", "not a layout") == []
    prompts = [item.prompt for item in load_eval_set("val").items][::2]
    rng = np.random.default_rng(1)
    oracle = [describe(plan_layout(p, rng)) for p in prompts]
    good = L.planner_tv(prompts, oracle)
    assert abs(good["diff"]) < 2 * good["diff_se"] and 0 < good["floor_se"] < 0.05  # an oracle: noise only
    assert L.planner_tv(prompts, oracle) == good  # seeded
    biased = [t.replace("small", "large") for t in oracle]  # every object large
    bad = L.planner_tv(prompts, biased)
    assert bad["diff"] > 4 * bad["diff_se"] > 0 and bad["floor"] == good["floor"]
    with pytest.raises(ValueError, match="one description per prompt"):
        L.planner_tv(prompts, oracle[:3])


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

    def fake_generate(z, task, *, context=None, seeds=None, draw=0, **kwargs):
        calls.append((len(z), context.prompt_ids.shape[0], seeds, draw))
        return list(script[len(calls) - 1])

    monkeypatch.setattr(smoke_llm, "generate", fake_generate)
    z = smoke_llm.clip.encode_text(prompts)
    out, draws = smoke_llm.upsample_from(z, prompts, seeds=[5, 6], return_draws=True)
    assert out == ["a large red circle in the center", "a large blue square in the top left"]
    # each redraw is of the unfaithful row only, from that prompt's own seed and the next draw's stream
    assert draws == [1, 3] and calls == [(2, 2, [5, 6], 0), (1, 1, [6], 1), (1, 1, [6], 2)]
    calls.clear()
    out = smoke_llm.upsample_from(z, prompts, seeds=[5, 6], max_tries=2)
    assert out[1] == "a small blue cross in the top left"  # gave up after 2 draws, kept the last
    calls.clear()
    assert smoke_llm.upsample_from(z, prompts, do_sample=False)[1] == "a small green square in the top left"
    assert len(calls) == 1  # greedy is deterministic: drawn once
    with pytest.raises(ValueError, match="max_tries"):
        smoke_llm.upsample_from(z, prompts, max_tries=0)


def test_a_prompt_typed_loosely_is_judged_by_the_checker(smoke_llm, monkeypatch):
    """ "A red circle, top-left!" is read as the grammar, so a faithful first draw is kept (not drawn 16 times)."""
    seen = []

    def fake_generate(z, task, *, context=None, seeds=None, draw=0, **kwargs):
        seen.append(draw)
        return ["a large red circle in the top left"] * len(z)

    monkeypatch.setattr(smoke_llm, "generate", fake_generate)
    written = smoke_llm.upsample(["A red circle, top-left!"], seed=0, details=True)
    assert written.descriptions == ["a large red circle in the top left"]
    assert written.draws == [1] and written.faithful == [True] and seen == [0]


def test_the_result_says_when_no_draw_was_faithful(smoke_llm, monkeypatch):
    monkeypatch.setattr(smoke_llm, "generate", lambda z, task, **kwargs: ["a large blue square in the center"] * len(z))
    written = smoke_llm.upsample(["a red circle", "a square"], seed=0, max_tries=3, details=True)
    assert written.draws == [3, 1] and written.faithful == [False, True] and not written.all_faithful
    assert written.descriptions[0] == "a large blue square in the center"  # the last draw, to be looked at


def test_a_prompt_outside_the_grammar_is_refused_before_drawing(smoke_llm, monkeypatch):
    from llmimg.core.text import UngrammaticalPromptError

    monkeypatch.setattr(smoke_llm, "generate", lambda *a, **k: pytest.fail("drew for a prompt no draw can match"))
    with pytest.raises(UngrammaticalPromptError, match="names no shape"):
        smoke_llm.upsample(["red"])
    z = smoke_llm.clip.encode_text(["red circle"])
    with pytest.raises(UngrammaticalPromptError, match="not in ShapesWorld's grammar"):
        smoke_llm.upsample_from(z, ["red circle"])
    with pytest.raises(TypeError, match="wrap a single prompt in a list"):
        smoke_llm.upsample("a red circle")


def test_upsampler_returns_descriptions_in_reading_order(smoke_llm, monkeypatch):
    """The model writes the prompt's order; what the generator gets is in reading order (invalid text untouched)."""
    written = ["a small blue square in the center and a large red circle in the top left", "a large red"]
    monkeypatch.setattr(smoke_llm, "generate", lambda z, task, **kwargs: list(written))
    prompts = ["a square and a red circle", "a red circle"]
    out = smoke_llm.upsample_from(smoke_llm.clip.encode_text(prompts), prompts, max_tries=1)
    assert out == ["a large red circle in the top left and a small blue square in the center", "a large red"]


def test_training_batches_pair_each_task_with_its_target(smoke_llm):
    """Upsampling rows learn the description in the prompt's order, caption rows in reading order."""
    bank = L.LLMBank(40, smoke_llm.clip, seed=3, prompt_order=True)
    samples = list(ShapesWorld(seed=3).samples(40))
    b = bank.batch(step=0, batch_size=32, caption_rate=0.5, seed=3)
    idx = torch.randint(40, (32,), generator=seeding.torch_generator(3, "batch", 0))
    texts = decode(smoke_llm.tokenizer, b["input_ids"])
    tasks = [L.TASKS[t] for t in b["task"].tolist()]
    assert set(tasks) == {"caption", "upsample"}
    reordered = 0
    for text, i, task in zip(texts, idx.tolist(), tasks):
        s = samples[i]
        assert text == (s.description if task == "caption" else describe_in_prompt_order(s.scene, s.prompt))
        reordered += task == "upsample" and text != s.description
    assert reordered > 0  # some upsampling targets differ from the reading-order description


# -- what the decoding options do, checked against the model's own probabilities -------------------
PROMPTS = [s.prompt for s in ShapesWorld(seed=3).samples(6, "val")]


def _inputs(llm, prompts):
    return llm.clip.encode_text(prompts), llm.context(prompts=prompts)


def _start(llm, prompts):
    """What generation starts from: prefix, prompt tokens and <bos>, with their mask."""
    z, context = _inputs(llm, prompts)
    return llm.lm.prefix_embeds(z, torch.full((len(z),), L.TASKS.index("upsample")), context)


@torch.no_grad()
def next_token_logprobs(llm, prompts, new_ids):
    """log p(next token) (B, T + 1, V) before each of the new tokens ``new_ids`` (B, T) and after the last."""
    start, mask = _start(llm, prompts)
    embeds = torch.cat([start, llm.lm.gpt2.get_input_embeddings()(new_ids)], dim=1)
    mask = torch.cat([mask, torch.ones_like(new_ids)], dim=1)
    logits = llm.lm.gpt2(inputs_embeds=embeds, attention_mask=mask, position_ids=L.positions(mask)).logits
    return torch.log_softmax(logits[:, start.shape[1] - 1:], dim=-1)


@pytest.fixture
def generated_ids(monkeypatch):
    """The token ids each ``generate`` call produced, before decoding (a list, one (B, T) tensor per call)."""
    import llmimg.stages.llm.writer as writer

    calls = []
    real = writer.decode

    def spy(tokenizer, ids):
        calls.append(ids.clone())
        return real(tokenizer, ids)
    monkeypatch.setattr(writer, "decode", spy)
    return calls


def seeds(seed: int, n: int = len(PROMPTS)) -> list[int]:
    return L.prompt_seeds(seed, n)


def test_top_k_1_and_a_cold_temperature_sample_the_greedy_sequence(smoke_llm):
    z, context = _inputs(smoke_llm, PROMPTS)
    greedy = smoke_llm.generate(z, "upsample", context=context, do_sample=False)
    assert smoke_llm.generate(z, "upsample", context=context, top_k=1, seeds=seeds(3)) == greedy
    assert smoke_llm.generate(z, "upsample", context=context, temperature=1e-3, seeds=seeds(3)) == greedy
    sampled = smoke_llm.generate(z, "upsample", context=context, seeds=seeds(3))
    assert sampled != greedy  # at temperature 1 without top-k this model's samples do differ from greedy
    assert smoke_llm.generate(z, "upsample", context=context, seeds=seeds(3)) == sampled  # same seeds, same sample
    assert smoke_llm.generate(z, "upsample", context=context, seeds=seeds(4)) != sampled
    assert smoke_llm.generate(z, "upsample", context=context, seeds=seeds(3), draw=1) != sampled  # another draw


def test_a_description_depends_on_its_own_seed_only(smoke_llm):
    """Prompt k's description is the one it gets alone: not its neighbours, nor its place in the batch."""
    together = smoke_llm.upsample(PROMPTS, seed=seeds(8), max_tries=1)
    alone = [smoke_llm.upsample([p], seed=[s], max_tries=1)[0] for p, s in zip(PROMPTS, seeds(8))]
    reversed_batch = smoke_llm.upsample(PROMPTS[::-1], seed=seeds(8)[::-1], max_tries=1)[::-1]
    assert together == alone == reversed_batch


def test_sampling_leaves_the_global_random_state_alone(smoke_llm):
    state = torch.get_rng_state()
    smoke_llm.upsample(PROMPTS, seed=1)
    smoke_llm.upsample(PROMPTS)  # fresh randomness, not torch's global generator either
    assert torch.equal(torch.get_rng_state(), state)


def test_top_k_samples_only_among_the_k_likeliest_tokens(smoke_llm, generated_ids):
    """At a hot temperature, top_k=2 keeps every token among the model's two likeliest; without it, not."""
    z, context = _inputs(smoke_llm, PROMPTS)
    outside = {}
    for top_k in (2, None):
        smoke_llm.generate(z, "upsample", context=context, temperature=5.0, top_k=top_k, seeds=seeds(1),
                           max_new_tokens=16)
        ids = generated_ids[-1]
        top2 = next_token_logprobs(smoke_llm, PROMPTS, ids[:, :-1]).topk(2, dim=-1).indices  # before each token
        in_top2 = (top2 == ids[..., None]).any(-1)
        produced = (ids == EOS_ID).long().cumsum(1) - (ids == EOS_ID).long() == 0  # up to and with the first <eos>
        assert produced.sum() > 3 * len(PROMPTS)
        outside[top_k] = int((produced & ~in_top2).sum())
    assert outside[2] == 0 and outside[None] > 0


def _best_sequence(llm, prompt, length):
    """The exact maximiser of the beam score (mean log-probability per token, transformers' default length
    penalty) over every sequence of at most ``length`` new tokens, by enumeration; and all scores."""
    vocab = llm.lm.gpt2.config.vocab_size
    prefixes, total, scores = torch.zeros(1, 0, dtype=torch.long), torch.zeros(1), {}
    for step in range(1, length + 1):
        logp = next_token_logprobs(llm, [prompt] * len(prefixes), prefixes)[:, -1] + total[:, None]
        for prefix, value in zip(prefixes.tolist(), logp[:, EOS_ID].tolist()):
            scores[(*prefix, EOS_ID)] = value / step  # a finished sequence: <eos> counts as a token
        go_on = torch.tensor([t for t in range(vocab) if t != EOS_ID])
        prefixes = torch.cat([prefixes.repeat_interleave(len(go_on), 0), go_on.repeat(len(prefixes))[:, None]], 1)
        total = logp[:, go_on].reshape(-1)
    scores.update({tuple(p): value / length for p, value in zip(prefixes.tolist(), total.tolist())})
    return max(scores, key=scores.get), scores


def test_beam_search_with_a_beam_for_every_sequence_finds_the_best_one(smoke_llm, generated_ids):
    """With vocab² beams, three tokens of beam search see every sequence: it must return the best-scoring
    one, which greedy decoding does not find here. (With a few beams, beam search is a heuristic: on this
    barely trained model 4 beams often score below greedy, so that is no property to test.)"""
    vocab = smoke_llm.lm.gpt2.config.vocab_size
    for prompt in PROMPTS[:2]:
        z, context = _inputs(smoke_llm, [prompt])
        smoke_llm.generate(z, "upsample", context=context, do_sample=False, num_beams=vocab * vocab, max_new_tokens=3)
        smoke_llm.generate(z, "upsample", context=context, do_sample=False, max_new_tokens=3)
        beam, greedy = (tuple(t for t in ids[0].tolist() if t != PAD_ID) for ids in generated_ids[-2:])
        best, scores = _best_sequence(smoke_llm, prompt, 3)
        assert beam == best
        assert scores[greedy] < scores[best]


# -- evaluate on a constructed LLM --------------------------------------------------------------
def _misdrawn(stated) -> bool:
    """Whether the scripted model's first draw for a prompt stating these objects contradicts it."""
    return len(stated) == 2 and stated[0].colour is not None


class ScriptedLLM:
    """Stands in for a ShapesLLM in :func:`L.evaluate`, right and wrong by construction.

    Upsampling writes the oracle's faithful description of every prompt, except that the
    model's first draw (``max_tries=1``) of a two-object prompt that states its first
    object's colour (:func:`_misdrawn`) gives that object a shape the prompt does not name
    (valid, unfaithful), which the checker redraws once.
    Captioning reads the image exactly but describes only its first object: right for
    one-object images, valid and wrong for two-object ones.
    """

    def __init__(self) -> None:
        self.prompts, self.captioned = [], []
        self.tokenizer = train_tokenizer()  # today's world's: evaluate scores it as today's upsampler

    def upsample(self, prompts, *, seed=None, max_tries=L.MAX_TRIES, return_draws=False):
        rng = np.random.default_rng(seed)
        out, draws = [], []
        for prompt in prompts:
            stated = parse_prompt(prompt)
            scene = complete_prompt(prompt, rng)
            if _misdrawn(stated) and max_tries == 1:
                other = next(s for s in SHAPES if s not in {o.shape for o in stated})
                scene = Scene((replace(scene.objects[0], shape=other), *scene.objects[1:]))
            out.append(describe(scene))
            draws.append(2 if _misdrawn(stated) and max_tries > 1 else 1)
        if max_tries == 1:
            self.prompts.extend(prompts)
        return (out, draws) if return_draws else out

    def caption(self, images):
        judged = judge_images(images)
        self.captioned.append([len(j.objects) for j in judged])
        return [describe(Scene(j.objects[:1])) for j in judged]


def test_evaluate_scores_a_constructed_llm_exactly():
    n = 40
    fake = ScriptedLLM()
    scores = L.evaluate(fake, n=n, batch_size=25)
    stated = [parse_prompt(p) for p in fake.prompts]
    one = sum(len(s) == 1 for s in stated)
    two, bad = n - one, sum(map(_misdrawn, stated))
    assert len(fake.prompts) == n and 0 < one < n and 0 < bad < two
    assert (scores["n_one_object"], scores["n_two_objects"], scores["n"]) == (one, two, n)
    # with the checker: every description valid and faithful, two draws for each misdrawn prompt
    for key in ("valid_rate", "faithfulness", "faithfulness_one_object", "faithfulness_two_objects",
                "model_valid_rate", "model_faithfulness_one_object"):
        assert scores[key] == 1.0, key
        assert scores[f"{key}_se"] == 0.0, key
    assert scores["upsample_draws"] == pytest.approx((n + bad) / n)
    # the model's first draws: all valid, the misdrawn two-object ones unfaithful
    assert scores["model_faithfulness"] == pytest.approx((n - bad) / n)
    assert scores["model_faithfulness_se"] == pytest.approx(standard_error((n - bad) / n, n))
    assert scores["model_faithfulness_two_objects"] == pytest.approx((two - bad) / two)
    assert scores["model_faithfulness_two_objects_se"] == pytest.approx(standard_error((two - bad) / two, two))
    # captions: val images (two batches), then heldout ones; only the one-object images are described right
    val, heldout = sum(fake.captioned[:2], []), sum(fake.captioned[2:], [])
    assert len(val) == len(heldout) == n and val.count(1) == one
    assert scores["caption_valid_rate"] == 1.0
    assert scores["caption_accuracy"] == pytest.approx(one / n)
    assert scores["caption_accuracy_se"] == pytest.approx(standard_error(one / n, n))
    assert scores["heldout_caption_accuracy"] == pytest.approx(heldout.count(1) / n)
