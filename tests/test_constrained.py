"""Constrained decoding with jump-forward: the automaton, the forced-token count, and the decoder on the smoke LLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmimg.core import seeding
from llmimg.core.data import ParseError, ShapesWorld, describe_in_prompt_order, faithful, parse_description
from llmimg.core.data.geneval import GenEvalWorld, parse_geneval_prompt
from llmimg.core.data.worlds import prompt_followed, upsample_target
from llmimg.core.text import EOS
from llmimg.stages.llm.constrained import DescriptionAutomaton, constrained_decode, forced_tokens
from llmimg.stages.llm.model import positions, task_ids

WORLD = ShapesWorld(seed=0)
GENEVAL = GenEvalWorld(seed=0)


def walk(automaton: DescriptionAutomaton, rng: np.random.Generator) -> str:
    """A random path through the automaton: any allowed word at every step."""
    while not automaton.done:
        allowed = automaton.allowed()
        automaton.advance(allowed[int(rng.integers(len(allowed)))])
    return automaton.text


def test_forced_tokens_counted_by_hand():
    # a(F) large red(F) circle(F) in(F) the(F) top(F) left(F) <eos>(F): only the size is open.
    assert forced_tokens("a red circle in the top left", "a large red circle in the top left") == (8, 9)
    # Open: the circle's size, colour and cell (first word; "center" has no second), the square's size and its
    # cell's two words; the rest, "and" and <eos> included, is forced: 11 of 17.
    assert forced_tokens("a circle and a blue square",
                         "a small green circle in the center and a large blue square in the top right") == (11, 17)
    # With the top left and top right taken, "top" can only go on as "middle".
    prompt = "a circle in the top left and a square in the top right and a triangle"
    text = ("a small red circle in the top left and a large red square in the top right and "
            "a small red triangle in the top middle")
    assert forced_tokens(prompt, text) == (20, 27)
    # Everything stated: every token is forced.
    assert forced_tokens("a small red circle in the center", "a small red circle in the center") == (8, 8)


def test_the_automaton_refuses_what_does_not_follow_the_prompt():
    with pytest.raises(ParseError, match="'blue' is not allowed after 'a large'; allowed: 'red'"):
        forced_tokens("a red circle", "a large blue circle in the center")
    with pytest.raises(ParseError, match="'center' is not allowed"):  # the other object's stated cell
        forced_tokens("a circle and a square in the center", "a small red circle in the center and a")
    with pytest.raises(ParseError, match="no layout follows the prompt"):
        DescriptionAutomaton("a circle in the center and a square in the center")
    automaton = DescriptionAutomaton("a circle")
    walk(automaton, np.random.default_rng(0))
    with pytest.raises(ParseError, match="nothing"):
        automaton.advance("and")
    with pytest.raises(ValueError, match="max_objects"):
        DescriptionAutomaton(None, max_objects=0)


def test_without_a_prompt_it_is_the_grammar_with_up_to_max_objects():
    automaton = DescriptionAutomaton(None, max_objects=2)
    assert automaton.forced() == "a"
    automaton.advance("a")
    assert automaton.allowed() == ("small", "large")
    for word in "small red circle in the center".split():
        automaton.advance(word)
    assert automaton.allowed() == ("and", EOS)
    for word in "and a large red square in the".split():
        automaton.advance(word)
    assert "center" not in automaton.allowed()  # the circle's cell
    for word in ["top", "left"]:
        automaton.advance(word)
    assert automaton.allowed() == (EOS,)  # two objects at most


def test_in_the_geneval_world_a_cell_must_leave_every_relation_satisfiable():
    prompt = parse_geneval_prompt("a red circle to the left of a blue square")
    # The circle's cell: not in the right column, and from the top row only "top left" and "top middle" (a square
    # right of the top middle takes the top right). The square's: right of the circle's, within 60 degrees.
    assert forced_tokens(prompt, "a small red circle in the top left and a large blue square in the top right") \
        == (12, 18)
    assert forced_tokens(prompt, "a small red circle in the top left and a large blue square in the bottom right") \
        == (13, 18)  # "bottom" can only go on as "right"
    with pytest.raises(ParseError, match="'right' is not allowed"):
        forced_tokens(prompt, "a small red circle in the top right")
    counted = DescriptionAutomaton(parse_geneval_prompt("three red circles"))
    assert len(counted.objects) == 3 and counted.forced() == "a"


@given(st.integers(0, 10_000), st.integers(0, 2**32 - 1))
def test_every_geneval_path_follows_the_prompt(index, seed):
    sample = GENEVAL.sample(index)
    text = walk(DescriptionAutomaton(sample.prompt_scene), np.random.default_rng(seed))
    assert prompt_followed("geneval", sample.prompt, text)
    forced_tokens(sample.prompt_scene, upsample_target(sample))  # the planner's training target is a path


@given(st.integers(0, 10_000), st.integers(0, 2**32 - 1))
def test_every_path_follows_the_prompt_and_every_faithful_description_is_a_path(index, seed):
    sample = WORLD.sample(index)
    text = walk(DescriptionAutomaton(sample.prompt), np.random.default_rng(seed))
    assert faithful(sample.prompt, text)
    forced_tokens(sample.prompt, describe_in_prompt_order(sample.scene, sample.prompt))  # raises if not a path
    parse_description(walk(DescriptionAutomaton(None, max_objects=2), np.random.default_rng(seed)))


def _inputs(llm, prompts):
    z = llm.clip.encode_text(prompts)
    return z, task_ids("upsample", len(prompts)), llm.context(prompts=prompts)


@torch.no_grad()
def _reference(llm, prompt):
    """Masked greedy decoding written plainly: one row, every step re-reads the whole sequence, one token a pass."""
    z, tasks, context = _inputs(llm, [prompt])
    x, mask = llm.lm.prefix_embeds(z, tasks, context)
    automaton, token = DescriptionAutomaton(prompt), llm.tokenizer.get_vocab()
    while not automaton.done:
        logits = llm.lm.gpt2(inputs_embeds=x, attention_mask=mask, position_ids=positions(mask)).logits[0, -1]
        allowed = automaton.allowed()
        choice = allowed[int(logits[[token[w] for w in allowed]].argmax())]
        automaton.advance(choice)
        x = torch.cat([x, llm.lm.gpt2.get_input_embeddings()(torch.tensor([[token[choice]]]))], 1)
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
    return automaton.text


PROMPTS = [s.prompt for s in WORLD.samples(12, "val")]


def test_jump_forward_writes_what_masked_greedy_decoding_writes_in_fewer_passes(smoke_llm):
    z, tasks, context = _inputs(smoke_llm, PROMPTS)
    jump = constrained_decode(smoke_llm.lm, smoke_llm.tokenizer, z, tasks, [DescriptionAutomaton(p) for p in PROMPTS],
                              context)
    plain = constrained_decode(smoke_llm.lm, smoke_llm.tokenizer, z, tasks,
                               [DescriptionAutomaton(p) for p in PROMPTS], context, jump_forward=False)
    assert jump.descriptions == plain.descriptions == [_reference(smoke_llm, p) for p in PROMPTS]
    assert all(faithful(p, d) for p, d in zip(PROMPTS, jump.descriptions))
    assert jump.tokens == plain.tokens == sum(len(d.split()) + 1 for d in jump.descriptions)
    assert jump.forced == plain.forced == sum(forced_tokens(p, d)[0] for p, d in zip(PROMPTS, jump.descriptions))
    assert plain.passes == max(len(d.split()) + 1 for d in jump.descriptions)  # the longest row, a pass a token
    choices = [len(d.split()) + 1 - forced_tokens(p, d)[0] for p, d in zip(PROMPTS, jump.descriptions)]
    assert jump.passes == max(choices)  # a pass a choice, the prefill reading the first forced run


def _parses(description: str) -> bool:
    try:
        return len(parse_description(description)) <= 2
    except ParseError:
        return False


def test_constrained_greedy_equals_plain_greedy_wherever_that_is_grammatical(smoke_llm):
    # The smoke LLM's greedy descriptions mostly parse but rarely follow their prompt; the prompts that end the list
    # ask for what it writes anyway, so that some rows follow them.
    prompts = [*(s.prompt for s in WORLD.samples(24, "val")), "a semicircle", "a cyan semicircle",
               "a large semicircle", "a semicircle in the bottom middle", "a diamond in the bottom middle"]
    z, tasks, context = _inputs(smoke_llm, prompts)
    plain = smoke_llm.generate(z, "upsample", context=context, do_sample=False)

    def ours(automata):
        return constrained_decode(smoke_llm.lm, smoke_llm.tokenizer, z, tasks, automata, context).descriptions

    grammar = ours([DescriptionAutomaton(None, max_objects=2) for _ in prompts])
    grammatical = [k for k, d in enumerate(plain) if _parses(d)]
    assert len(grammatical) >= len(prompts) // 2
    assert [grammar[k] for k in grammatical] == [plain[k] for k in grammatical]
    assert all(_parses(d) for d in grammar)
    following = ours([DescriptionAutomaton(p) for p in prompts])
    kept = [k for k, (p, d) in enumerate(zip(prompts, plain)) if faithful(p, d)]
    assert kept, "some of the smoke LLM's greedy descriptions should follow their prompts"
    assert [following[k] for k in kept] == [plain[k] for k in kept]
    assert all(faithful(p, d) for p, d in zip(prompts, following))


def test_sampling_follows_the_prompt_and_its_seed(smoke_llm):
    z, tasks, context = _inputs(smoke_llm, PROMPTS)

    def sample(seeds):
        return constrained_decode(smoke_llm.lm, smoke_llm.tokenizer, z, tasks,
                                  [DescriptionAutomaton(p) for p in PROMPTS], context, do_sample=True,
                                  generators=[seeding.torch_generator(s, "describe") for s in seeds]).descriptions

    first, again, other = sample(range(12)), sample(range(12)), sample(range(100, 112))
    assert first == again and first != other
    assert all(faithful(p, d) for p, d in zip(PROMPTS, first + other))
    with pytest.raises(ValueError, match="one torch.Generator per row"):
        constrained_decode(smoke_llm.lm, smoke_llm.tokenizer, z, tasks, [DescriptionAutomaton(p) for p in PROMPTS],
                           context, do_sample=True)


def test_the_upsampler_and_the_pipeline_write_through_the_automaton(smoke_pipeline, smoke_llm):
    written = smoke_llm.upsample(PROMPTS, seed=0, constrained=True, details=True)
    assert written.all_faithful and written.draws == [1] * len(PROMPTS)
    assert smoke_llm.upsample(PROMPTS, seed=0, constrained=True) == written.descriptions  # its seed decides
    greedy = smoke_llm.upsample(PROMPTS, constrained=True, do_sample=False)
    assert greedy == smoke_llm.upsample(PROMPTS, seed=1, constrained=True, do_sample=False)
    with pytest.raises(TypeError, match="top_k"):
        smoke_llm.upsample(PROMPTS, constrained=True, top_k=3)
    out = smoke_pipeline(PROMPTS[:3], num_inference_steps=1, generator=torch.Generator().manual_seed(0),
                         output_type="np", constrained=True)
    assert out.faithful == [True] * 3 and all(faithful(p, d) for p, d in zip(PROMPTS, out.descriptions))


def test_the_costs_of_the_three_ways_to_write(smoke_llm):
    from llmimg.speed.decoding import decoding_costs, forced_fraction

    samples = list(WORLD.samples(20))
    counted = forced_fraction(samples)
    by_hand = [forced_tokens(s.prompt, describe_in_prompt_order(s.scene, s.prompt)) for s in samples]
    assert (counted["forced"], counted["tokens"]) == tuple(map(sum, zip(*by_hand)))
    costs = decoding_costs(smoke_llm, PROMPTS[:4], repeats=1)
    assert costs["masked"]["passes"] > costs["jump_forward"]["passes"] > 0
    assert costs["masked"]["follows_prompt"] == costs["jump_forward"]["follows_prompt"] == 1.0
    assert costs["checker"]["n"] == 4 and costs["checker"]["ms_min"] <= costs["checker"]["ms_median"]
    with pytest.raises(ValueError, match="unknown decoding mode"):
        decoding_costs(smoke_llm, PROMPTS[:2], modes=("beam",))


def test_the_decoding_experiment_records_its_run(smoke_llm, tmp_path, monkeypatch):
    from llmimg.research import decoding

    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(tmp_path))
    record = decoding.run("smoke", progress=False)
    assert decoding.load("smoke")["follows"] == record["follows"]
    assert record["follows"]["jump_forward"]["follows_prompt"] == 1.0 and record["follows"]["jump_forward"]["n"] == 16
    assert record["batch"]["jump_forward"]["passes"] < record["batch"]["masked"]["passes"]
    assert set(record["single"]["median_ms"]) == {"checker", "masked", "jump_forward"}
