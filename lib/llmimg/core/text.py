"""The tokenizer every stage shares, and the checks a typed prompt goes through.

ShapesWorld's language is closed: a few dozen words. So the tokenizer is a
word-level model trained with the ``tokenizers`` library on ShapesWorld text and
wrapped as a ``transformers`` fast tokenizer; it is saved inside each model folder
and loads back with ``AutoTokenizer.from_pretrained(folder)``.

Every encoded text is ``<bos> words <eos>``, padded with ``<pad>`` (id 0) to the
context length. ``<eos>`` has id 2, the id open_clip's ``eos`` text pooling expects.

**Unknown words.** Inside the tokenizer, a word outside the vocabulary becomes
``<unk>``, as in any HF tokenizer. Where text is used as a *prompt* (the CLIP, LLM and
generator entry points) it goes through :func:`check_prompt` first, which raises
:class:`UnknownWordsError` naming the words, so nothing ever reaches a model silently
mangled. The same goes for empty and overlong prompts.

**Prompts to draw.** What the upsampler and the pipelines take goes one step further,
through :func:`normalise_prompt`: the words must also read as ShapesWorld's grammar,
leniently ("red circle, top-left!" is ``a red circle in the top left``), so that the
upsampler's checker can judge every description it writes; what cannot be read so is
refused with :class:`UngrammaticalPromptError`, saying why.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import torch
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in this order
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
CONTEXT_LENGTH = 32  # tokens, <bos> and <eos> included: room for two described objects and more


class PromptError(ValueError):
    """A prompt the models cannot take; the message says why and what to do."""


class EmptyPromptError(PromptError):
    """A prompt with no words in it."""


class UnknownWordsError(PromptError):
    """A prompt with words outside the vocabulary; ``.words`` lists them in order of appearance.

    The message quotes at most :data:`SHOWN_WORDS` of them, each cut to
    :data:`SHOWN_CHARACTERS`, so a pasted page is refused in one readable line.
    """

    def __init__(self, words: Sequence[str], vocabulary: Iterable[str]) -> None:
        self.words = list(words)
        known = ", ".join(sorted(v for v in vocabulary if v not in SPECIAL_TOKENS))
        shown = [repr(w if len(w) <= SHOWN_CHARACTERS else w[:SHOWN_CHARACTERS - 1] + "…")
                 for w in self.words[:SHOWN_WORDS]]
        more = len(self.words) - SHOWN_WORDS
        super().__init__(
            f"unknown word{'s' if len(self.words) > 1 else ''} {', '.join(shown)}"
            f"{f' and {more} more' if more > 0 else ''}: ShapesWorld's models only know these words: {known}"
        )


SHOWN_WORDS, SHOWN_CHARACTERS = 10, 40  # how much of the unknown words a message quotes


class UngrammaticalPromptError(PromptError):
    """A prompt whose known words do not read as objects (no shape, a word out of place, two objects in one cell)."""


class PromptTooLongError(PromptError):
    """A prompt with more tokens than the context holds."""


def shapes_texts(n: int = 2_000, seed: int = 0) -> list[str]:
    """ShapesWorld descriptions and prompts of ``n`` training scenes: the tokenizer's corpus."""
    from llmimg.core.data import ShapesWorld

    texts = []
    for sample in ShapesWorld(seed=seed).samples(n, "train"):
        texts += [sample.description, sample.prompt]
    return texts


def train_tokenizer(texts: Iterable[str] | None = None,
                    context_length: int = CONTEXT_LENGTH) -> PreTrainedTokenizerFast:
    """Train the word-level tokenizer on ``texts`` (default: :func:`shapes_texts`) and wrap it for transformers.

    Text is lower-cased and split at whitespace and punctuation before lookup, so
    ``"A Red circle."`` and ``"a red circle ."`` give the same tokens.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts if texts is not None else shapes_texts(),
                            trainer=WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=context_length, padding_side="right",
    )


GENEVAL_CONTEXT_LENGTH = 40  # four fully described objects take 35 words, plus <bos> and <eos>


def geneval_words() -> tuple[str, ...]:
    """Every word of the GenEval-shaped world's prompts and descriptions (issue 26), sorted."""
    from llmimg.core.data import ATTRIBUTES
    from llmimg.core.data.geneval import NUMBERS, PLURALS, RELATION_PHRASES

    words = {"a", "an", "and", "in", "the", *NUMBERS, *PLURALS.values(),
             *(w for phrase in RELATION_PHRASES.values() for w in phrase.split()),
             *(w for values in ATTRIBUTES.values() for v in values for w in v.split())}
    return tuple(sorted(words))


def geneval_texts(n: int = 2_000, seed: int = 0) -> list[str]:
    """Descriptions and prompts of ``n`` training samples of the GenEval-shaped world: its tokenizer's corpus."""
    from llmimg.core.data.geneval import GenEvalWorld

    texts = []
    for sample in GenEvalWorld(seed=seed).samples(n, "train"):
        texts += [sample.description, sample.prompt]
    return texts


def train_geneval_tokenizer(texts: Iterable[str] | None = None,
                            context_length: int = GENEVAL_CONTEXT_LENGTH) -> PreTrainedTokenizerFast:
    """The opt-in tokenizer of the GenEval-shaped world: :func:`train_tokenizer` on its texts, every word included.

    Counts ("three"), plurals ("circles") and relations ("to the left of") join today's
    words, and the context grows to :data:`GENEVAL_CONTEXT_LENGTH` for four described
    objects. One line of every word of :func:`geneval_words` joins the corpus, so no word
    a prompt of the held-out split uses is missing. The default tokenizer is unchanged.
    """
    corpus = list(texts if texts is not None else geneval_texts()) + [" ".join(geneval_words())]
    return train_tokenizer(corpus, context_length=context_length)


def for_text_generation(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A copy of ``tokenizer`` for transformers' ``pipeline("text-generation")``, which continues a prompt.

    The library encodes finished texts, ``<bos> words <eos>``; a prompt to continue must
    not end with ``<eos>``, so this copy encodes ``<bos> words``, as causal LMs' tokenizers
    do. The pipeline appends the decoded new tokens to the prompt as they are, so each
    word decodes with its leading space, as GPT-2's tokens do.
    """
    from tokenizers import Regex, Tokenizer, decoders, processors

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()  # transformers leaves its last call's padding and truncation on the backend
    backend.no_truncation()
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, BOS_ID)])
    backend.decoder = decoders.Replace(Regex("^"), " ")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=tokenizer.model_max_length, padding_side=tokenizer.padding_side,
    )


def words(text: str) -> list[str]:
    """The words of ``text`` as the tokenizer splits them (lower case, punctuation apart)."""
    return re.findall(r"\w+|[^\w\s]+", text.lower())


# Typed punctuation the prompt checks read as spaces: "a red circle!" and "a red circle, top-left" are fine.
# The checks fold the text with NFKC first, so the fullwidth "！", the ellipsis "…" and the like count too.
IGNORED_PUNCTUATION = str.maketrans({c: " " for c in ".,;:!?\"()-"})


def check_unicode(text: str) -> None:
    """Raise a :class:`PromptError` for text that is not valid Unicode: lone surrogates, undecodable bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = text[err.start]
        # Python decodes a command line's invalid bytes to surrogates U+DC80..U+DCFF ("surrogateescape").
        what = (f"the byte {ord(char) - 0xDC00:#04x}, which is not UTF-8 text" if 0xDC80 <= ord(char) <= 0xDCFF
                else f"a lone surrogate ({char!a}), which is not a character")
        raise PromptError(f"the prompt is not valid text: at position {err.start} it has {what}") from None


def check_prompt(tokenizer: PreTrainedTokenizerFast, text: str) -> str:
    """Return ``text`` as the models will read it if they can take it as a prompt, else raise a :class:`PromptError`.

    The text is folded with Unicode's NFKC (as the tokenizer folds it: fullwidth and
    mathematical letters become plain ones, "…" three full stops), surrounding spaces
    go, and the punctuation in :data:`IGNORED_PUNCTUATION` reads as a space; case is
    kept. Raises :class:`EmptyPromptError` for no words, :class:`UnknownWordsError`
    naming any word outside the vocabulary, :class:`PromptTooLongError` when it needs
    more tokens than ``tokenizer.model_max_length``, and :class:`PromptError` for
    text that is not valid Unicode (lone surrogates, undecodable bytes).
    """
    if not isinstance(text, str):
        raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
    check_unicode(text)
    # Punctuation as people type it carries nothing ShapesWorld's words do not: read it as a space.
    stripped = " ".join(unicodedata.normalize("NFKC", text).translate(IGNORED_PUNCTUATION).split())
    if not stripped:
        raise EmptyPromptError("the prompt is empty: type a few words, for example 'a red circle'")
    vocab = tokenizer.get_vocab()
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(
        tokenizer.backend_tokenizer.normalizer.normalize_str(stripped))
    unknown = list(dict.fromkeys(w for w, _ in pieces if w not in vocab or w in SPECIAL_TOKENS))
    if unknown:
        raise UnknownWordsError(unknown, vocab)
    n_tokens = len(pieces) + 2
    if n_tokens > tokenizer.model_max_length:
        raise PromptTooLongError(
            f"the prompt has {n_tokens} tokens (with <bos> and <eos>), more than the "
            f"{tokenizer.model_max_length} the models read; shorten it")
    return stripped


def normalise_prompt(tokenizer: PreTrainedTokenizerFast, text: str) -> str:
    """A typed prompt in the grammar of the tokenizer's world, the form the upsampler's checker judges, or a
    :class:`PromptError`.

    :func:`check_prompt` first (valid text, known words, not too long), then the words
    are read as the world's objects (:func:`~llmimg.core.data.worlds.read_prompt_words`;
    today's world reads leniently: a missing article, a position without "in the",
    phrases without "and") and written back in the grammar, lower case: ``"A red circle,
    top-left!"`` becomes ``"a red circle in the top left"``. A prompt already in the
    grammar comes back as it is. Words that cannot be read as objects raise
    :class:`UngrammaticalPromptError` saying why.
    """
    from llmimg.core.data import ParseError
    from llmimg.core.data.worlds import read_prompt_words

    words = check_prompt(tokenizer, text).lower().split()
    try:
        prompt = read_prompt_words(world_of(tokenizer), words)
    except ParseError as err:
        raise UngrammaticalPromptError(f"the prompt cannot be read as ShapesWorld objects: {err}") from None
    n_tokens = len(prompt.split()) + 2
    if n_tokens > tokenizer.model_max_length:
        raise PromptTooLongError(f"the prompt reads as {prompt!r}, {n_tokens} tokens (with <bos> and <eos>), more "
                                 f"than the {tokenizer.model_max_length} the models read; shorten it")
    return prompt


def world_of(tokenizer: PreTrainedTokenizerFast) -> str:
    """The world a tokenizer was trained for: ``"geneval"`` if it knows the counts and relations, else ``"shapes"``.

    The GenEval-shaped world's language contains today's, so its tokenizer's vocabulary
    is a strict superset; :func:`check_tokenizer` checks the vocabulary is exactly one of the two.
    """
    return "geneval" if "three" in tokenizer.get_vocab() else "shapes"


def world_context_length(tokenizer: PreTrainedTokenizerFast) -> int:
    """The context of the tokenizer's world, :data:`CONTEXT_LENGTH` or :data:`GENEVAL_CONTEXT_LENGTH`.

    What a model's shape is built from: never the tokenizer's own ``model_max_length``,
    which a damaged ``tokenizer_config.json`` could change (:func:`check_tokenizer` says so).
    """
    return GENEVAL_CONTEXT_LENGTH if world_of(tokenizer) == "geneval" else CONTEXT_LENGTH


def world_tokenizer(world: str) -> PreTrainedTokenizerFast:
    """A new tokenizer for ``world``: :func:`train_tokenizer` (``"shapes"``) or :func:`train_geneval_tokenizer`."""
    from llmimg.core.data.worlds import check_world

    return train_geneval_tokenizer() if check_world(world) == "geneval" else train_tokenizer()


def check_tokenizer(tokenizer: PreTrainedTokenizerFast) -> str | None:
    """Why ``tokenizer`` is not one of the course's tokenizers as it was saved, or None if it is.

    Its special tokens must have ids 0 to 3, and its vocabulary and context must be those
    of one world (:func:`world_of`): today's words and :data:`CONTEXT_LENGTH`, or the
    GenEval-shaped world's :func:`geneval_words` and :data:`GENEVAL_CONTEXT_LENGTH`. A
    damaged ``tokenizer_config.json`` would otherwise lift the prompt-length limit or
    shift the ids the models read.
    """
    from llmimg.core.data import ATTRIBUTES

    vocab = tokenizer.get_vocab()
    if [vocab.get(t) for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        return f"its special tokens {', '.join(SPECIAL_TOKENS)} do not have the ids 0 to {len(SPECIAL_TOKENS) - 1}"
    named = (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token)
    if named != SPECIAL_TOKENS:
        return (f"it names {', '.join(map(str, named))} as padding, start, end and unknown, "
                f"not {', '.join(SPECIAL_TOKENS)}")
    if world_of(tokenizer) == "geneval":
        words, context, what = set(geneval_words()), GENEVAL_CONTEXT_LENGTH, "the GenEval-shaped world's words"
    else:
        words = {"a", "an", "and", "in", "the", *(w for values in ATTRIBUTES.values() for v in values
                                                  for w in v.split())}
        context, what = CONTEXT_LENGTH, "ShapesWorld's words"
    if set(vocab) != words | set(SPECIAL_TOKENS):
        odd = sorted(set(vocab) ^ (words | set(SPECIAL_TOKENS)))
        return f"its vocabulary is not {what} ({', '.join(map(repr, odd[:5]))} differ)"
    if tokenizer.model_max_length != context:
        return f"its context is {tokenizer.model_max_length} tokens, not {context}"
    return None


def encode(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], *, check: bool = True,
           context_length: int | None = None) -> dict[str, torch.Tensor]:
    """Token ids and attention mask of ``texts``, padded to the context length, as tensors.

    With ``check=True`` (the default) every text goes through :func:`check_prompt`
    first; training code, whose texts come from ShapesWorld, passes ``check=False``.
    The empty string is allowed when unchecked: it encodes to ``<bos> <eos>``, the
    "no condition" text of classifier-free guidance.
    """
    if isinstance(texts, str):
        raise TypeError("encode takes a list of texts; wrap a single text in a list")
    if check:
        texts = [check_prompt(tokenizer, t) for t in texts]
    out = tokenizer(list(texts), padding="max_length", truncation=True,
                    max_length=context_length or tokenizer.model_max_length, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def decode(tokenizer: PreTrainedTokenizerFast, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
    """Texts of token id rows, stopping at the first ``<eos>``; special tokens dropped."""
    rows = ids.tolist() if isinstance(ids, torch.Tensor) else [list(r) for r in ids]
    cut = [r[: r.index(EOS_ID)] if EOS_ID in r else r for r in rows]
    return [t.strip() for t in tokenizer.batch_decode(cut, skip_special_tokens=True)]
