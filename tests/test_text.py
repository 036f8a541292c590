"""The shared tokenizer: vocabulary, round trips, saving, and the prompt checks."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from llmimg.core.data import ATTRIBUTES, ShapesWorld
from llmimg.core.text import (BOS_ID, CONTEXT_LENGTH, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, EmptyPromptError,
                         PromptError, PromptTooLongError, UnknownWordsError, check_prompt, decode, encode,
                         train_tokenizer)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def grammar_words() -> set[str]:
    words = {"a", "an", "and", "in", "the"}
    for values in ATTRIBUTES.values():
        for value in values:
            words.update(value.split())
    return words


def test_vocabulary_is_the_grammar(tok):
    vocab = tok.get_vocab()
    assert set(vocab) == grammar_words() | set(SPECIAL_TOKENS)
    assert [vocab[t] for t in SPECIAL_TOKENS] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_training_is_deterministic(tok):
    assert train_tokenizer().get_vocab() == tok.get_vocab()


def test_round_trip_of_shapes_text(tok):
    texts = [t for s in ShapesWorld(seed=3).samples(200, "heldout") for t in (s.description, s.prompt)]
    enc = encode(tok, texts)
    assert enc["input_ids"].shape == (len(texts), CONTEXT_LENGTH)
    assert (enc["input_ids"][:, 0] == BOS_ID).all()
    lengths = enc["attention_mask"].sum(1)
    for row, n, text in zip(enc["input_ids"], lengths, texts):
        assert row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
        assert n == len(text.split()) + 2
    assert decode(tok, enc["input_ids"]) == texts


def test_case_and_full_stop_do_not_matter(tok):
    assert check_prompt(tok, "  A Red CIRCLE.  ") == "A Red CIRCLE"
    a = encode(tok, ["A Red CIRCLE."])["input_ids"]
    b = encode(tok, ["a red circle"])["input_ids"]
    assert a.tolist() == b.tolist()


def test_save_and_load_with_transformers(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "a small cyan semicircle in the bottom middle and a cross"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.model_max_length == CONTEXT_LENGTH


@pytest.mark.parametrize("prompt, error, words", [
    ("a magenta circle", UnknownWordsError, ["magenta"]),
    ("a red circle, please!", UnknownWordsError, ["please"]),
    ("a red circle & a square", UnknownWordsError, ["&"]),
    ("a círcle", UnknownWordsError, ["círcle"]),
    ("ein roter Kreis", UnknownWordsError, ["ein", "roter", "kreis"]),
    ("", EmptyPromptError, None),
    ("   \t ", EmptyPromptError, None),
    (" and ".join(["a red circle"] * 10), PromptTooLongError, None),
])
def test_bad_prompts_get_clear_errors(tok, prompt, error, words):
    with pytest.raises(error) as info:
        check_prompt(tok, prompt)
    assert isinstance(info.value, PromptError) and isinstance(info.value, ValueError)
    if words is not None:
        assert info.value.words == words
        for w in words:
            assert repr(w) in str(info.value)
        assert "circle" in str(info.value)  # the message lists the words that are known


@pytest.mark.parametrize("prompt", ["a red circle!", "a red circle,", "a red circle?", "a red circle.",
                                    "  A red circle; in the top-left...", '"a (red) circle"'])
def test_typed_punctuation_is_read_as_a_space(tok, prompt):
    expected = "a red circle in the top left" if "top" in prompt else "a red circle"
    assert check_prompt(tok, prompt).lower() == expected


@pytest.mark.parametrize("prompt, message", [
    ("\ud800", "at position 0 it has a lone surrogate ('\\ud800')"),
    ("a red circle\udcff", "at position 12 it has the byte 0xff, which is not UTF-8 text"),
])
def test_text_that_is_not_unicode_is_a_prompt_error(tok, smoke_pipeline, prompt, message):
    with pytest.raises(PromptError, match=re.escape(f"the prompt is not valid text: {message}")):
        check_prompt(tok, prompt)
    with pytest.raises(PromptError, match="not valid text"):
        smoke_pipeline(prompt, num_inference_steps=1)


def test_special_tokens_typed_as_words_are_unknown(tok):
    with pytest.raises(UnknownWordsError):
        check_prompt(tok, "a <eos> circle")


def test_encode_checks_by_default_but_training_may_skip(tok):
    with pytest.raises(UnknownWordsError):
        encode(tok, ["a blorb"])
    assert encode(tok, ["a blorb"], check=False)["input_ids"][0, 2] == UNK_ID
    assert encode(tok, [""], check=False)["input_ids"][0, :3].tolist() == [BOS_ID, EOS_ID, PAD_ID]
    with pytest.raises(TypeError):
        encode(tok, "a circle")
    with pytest.raises(PromptError):
        check_prompt(tok, 42)
