"""The shared tokenizer: vocabulary, round trips, saving, and the prompt checks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from llmimg.core.data import ATTRIBUTES, ShapesWorld, parse_prompt
from llmimg.core.text import (BOS_ID, CONTEXT_LENGTH, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, EmptyPromptError,
                              PromptError, PromptTooLongError, UngrammaticalPromptError, UnknownWordsError,
                              check_prompt, check_tokenizer, decode, encode, normalise_prompt, train_tokenizer)


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


@pytest.mark.parametrize("prompt", ["a red circle！", "a red circle…", "ａ ｒｅｄ ｃｉｒｃｌｅ",
                                    "a red circle，top－left", "𝐚 𝐫𝐞𝐝 𝐜𝐢𝐫𝐜𝐥𝐞"])
def test_fullwidth_and_other_compatibility_forms_read_as_their_plain_letters(tok, prompt):
    """NFKC, as the tokenizer applies it: fullwidth and ellipsis punctuation are punctuation, not unknown words."""
    expected = "a red circle top left" if "top" in prompt else "a red circle"
    assert check_prompt(tok, prompt) == expected


def test_an_unknown_word_is_quoted_briefly(tok):
    with pytest.raises(UnknownWordsError) as err:
        check_prompt(tok, "a " + "z" * 1_000_000 + " circle " + " ".join(f"w{i}" for i in range(20)))
    message = str(err.value)
    assert len(message) < 800 and "'zzzzzzzzz" in message and "…'" in message and "and 11 more" in message
    assert len(err.value.words) == 21 and len(err.value.words[0]) == 1_000_000  # the words themselves are whole


@pytest.mark.parametrize("typed, read", [
    ("A red circle, top-left!", "a red circle in the top left"),
    ("a red circle in the top left", "a red circle in the top left"),
    ("small red circle and blue square center", "a small red circle and a blue square in the center"),
])
def test_normalise_prompt_writes_what_it_reads_in_the_grammar(tok, typed, read):
    assert normalise_prompt(tok, typed) == read


@settings(max_examples=300)
@given(words=st.lists(st.sampled_from(sorted(grammar_words() | {",", "!", "-", "…", "Red", "ＣＩＲＣＬＥ"})),
                      min_size=1, max_size=12))
def test_every_prompt_accepted_parses_to_the_grammar(tok, words):
    """The upsampler's checker contract: accepted means it parses; refused means a reason in one line."""
    try:
        prompt = normalise_prompt(tok, " ".join(words))
    except PromptError as err:
        assert str(err) and "\n" not in str(err)
        assert isinstance(err, (UngrammaticalPromptError, EmptyPromptError, PromptTooLongError))
        return
    assert parse_prompt(prompt) and normalise_prompt(tok, prompt) == prompt  # in the grammar, and a fixed point


def test_check_tokenizer_accepts_the_course_tokenizer_and_names_what_is_wrong(tok, tmp_path):
    assert check_tokenizer(tok) is None
    tok.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")  # emptied: no special tokens, no context length
    assert "padding, start, end and unknown" in check_tokenizer(AutoTokenizer.from_pretrained(tmp_path))
    other = train_tokenizer(["a red circle", "a blue square"])
    assert "vocabulary is not ShapesWorld's words" in check_tokenizer(other)
