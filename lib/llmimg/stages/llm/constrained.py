"""Constrained decoding with jump-forward: the LLM spends a forward pass only where it has a choice.

A description of today's world is a fixed sequence of *slots*, object by object in the
prompt's order (the order the upsampler writes, ``config.prompt_order``)::

    "a" size colour shape "in" "the" cell ("and" …)* <eos>

The grammar fixes the article, "in the", "and" and ``<eos>``; the prompt fixes more: a
stated size, colour or cell leaves its slot one word, and the shape is always stated. So
most tokens of a description are *forced*: only one token is allowed there. What is left
is what the model decides: the attributes the prompt leaves open, and where a cell has two
words, the second one.

:class:`DescriptionAutomaton` is that grammar as a finite-state machine over words: its
state is the slot and how much of it is written; :meth:`~DescriptionAutomaton.allowed` lists
the words that may come next. A cell is allowed when some whole layout that follows the
prompt puts the object there, given the cells written before: for today's world, a cell
no other object takes; for the GenEval-shaped world (a
:class:`~llmimg.core.data.geneval.PromptScene`: a counted group is that many objects of
its shape), also one that keeps every relation satisfiable
(:func:`~llmimg.core.data.geneval.placements`). So every path through the automaton is a
description that follows its prompt. Without a prompt it is the description grammar
alone: any shape, one object or more (up to ``max_objects``), distinct cells.

:func:`constrained_decode` writes with it, batched and with GPT-2's KV cache:

* **masking**: at a choice, the logits of every word the automaton forbids are set to
  −∞ before the argmax (or the sample), so nothing outside the grammar is ever written;
* **jump-forward** (SGLang's compressed finite-state machine, Zheng et al. 2024): after a
  choice, the forced words that follow are appended at once and read in the same forward
  pass as the chosen token, instead of one pass each. Rows whose runs differ in length
  are padded on the right inside the pass, the padding masked out of attention, and
  positions count real tokens only (:func:`~llmimg.stages.llm.model.positions`).

Greedy constrained decoding equals plain greedy decoding wherever the latter writes a
description that follows the prompt: where the model's own choice is allowed, masking
does not change it, and a forced word is the only one such a description can hold there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmimg.core.data import COLOUR_NAMES, POSITIONS, SHAPES, SIZES, ParseError, PartialObject, parse_prompt
from llmimg.core.data.captions import article
from llmimg.core.data.geneval import PromptScene, placements
from llmimg.core.text import EOS, PAD_ID
from llmimg.stages.llm.model import positions

Option = tuple[str, ...]  # one complete value of a slot, as words


class DescriptionAutomaton:
    """The description grammar (and a prompt's constraints) as a finite-state machine over words.

    ``prompt``: the objects a description must hold, in the order it names them: a prompt
    of today's world (a string or parsed objects), a GenEval-shaped prompt (a
    :class:`~llmimg.core.data.geneval.PromptScene`), or None for the grammar alone, with 1
    to ``max_objects`` objects. Feed it words with :meth:`advance`; :meth:`allowed` says what may come next
    (``"<eos>"`` ends the description), and :attr:`done` says it has ended.
    """

    def __init__(self, prompt: str | PromptScene | Sequence[PartialObject] | None = None,
                 max_objects: int = 2) -> None:
        if isinstance(max_objects, bool) or not isinstance(max_objects, int) \
                or not 1 <= max_objects <= len(POSITIONS):
            raise ValueError(f"max_objects must be a whole number from 1 to {len(POSITIONS)}, got {max_objects!r}")
        self.max_objects = max_objects
        self.objects: tuple[PartialObject, ...] | None = None
        self.placements: list[tuple[str, ...]] | None = None  # the cells each object may take, object by object
        if isinstance(prompt, PromptScene):  # the GenEval-shaped world: counts and relations
            self.objects = tuple(PartialObject(g.shape, g.colour, g.size, g.position)
                                 for g in (prompt.groups[k] for k in prompt.slots))
            self.placements = placements(prompt)
        elif prompt is not None:
            self.objects = tuple(parse_prompt(prompt)) if isinstance(prompt, str) else tuple(prompt)
            self.placements = [cells for cells in itertools.permutations(POSITIONS, len(self.objects))
                               if all(o.position in (None, c) for o, c in zip(self.objects, cells))]
        if self.objects is not None and not self.placements:
            raise ParseError("no layout follows the prompt: its cells and relations leave no way to place "
                             f"its {len(self.objects)} object(s) on the {len(POSITIONS)} cells")
        self.words: list[str] = []
        self.cells: list[str] = []  # the cells written so far
        self._last: Option = ()  # the value of the slot completed last
        self._slots = self._plan()
        self._next_slot()

    # -- the grammar ---------------------------------------------------------------------------------------------
    def _plan(self) -> Iterator[tuple[Option, ...]]:
        """The slots one after the other; each is made only when the one before is complete."""
        prompt = self.objects
        for k in range(self.max_objects if prompt is None else len(prompt)):
            if k and prompt is None:
                yield ("and",), (EOS,)
                if self._last == (EOS,):
                    return
            elif k:
                yield (("and",),)
            given = prompt[k] if prompt is not None else None
            yield tuple((article(s), s) for s in ((given.size,) if given and given.size else SIZES))
            yield ((given.colour,),) if given and given.colour else tuple((c,) for c in COLOUR_NAMES)
            yield ((given.shape,),) if given else tuple((s,) for s in SHAPES)
            yield (("in", "the"),)
            if self.placements is None:  # the grammar alone: any cell not taken
                cells = {c for c in POSITIONS if c not in self.cells}
            else:  # a cell some whole layout that follows the prompt gives this object, after the cells written
                cells = {p[k] for p in self.placements if list(p[:k]) == self.cells}
            yield tuple(tuple(c.split()) for c in POSITIONS if c in cells)
            self.cells.append(" ".join(self._last))
        yield ((EOS,),)

    def _next_slot(self) -> None:
        self._options: list[Option] = list(next(self._slots, ()))
        self._depth = 0

    # -- the machine ---------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether the description has ended (``<eos>`` written)."""
        return not self._options

    def allowed(self) -> tuple[str, ...]:
        """The words that may come next, in a fixed order; empty once the description has ended."""
        return tuple(dict.fromkeys(o[self._depth] for o in self._options))

    def forced(self) -> str | None:
        """The next word if the grammar and the prompt allow only one, else None."""
        allowed = self.allowed()
        return allowed[0] if len(allowed) == 1 else None

    def advance(self, word: str) -> None:
        """Write ``word``; raises ParseError if it is not allowed here."""
        options = [o for o in self._options if o[self._depth] == word]
        if not options:
            allowed = ", ".join(map(repr, self.allowed())) or "nothing (the description has ended)"
            raise ParseError(f"{word!r} is not allowed after {' '.join(self.words)!r}; allowed: {allowed}")
        self.words.append(word)
        self._options, self._depth = options, self._depth + 1
        if len(options[0]) == self._depth:  # no value of a slot is the start of another
            self._last = options[0]
            self._next_slot()

    def take_forced(self) -> list[str]:
        """Write every forced word from here to the next choice (or the end); returns them."""
        run = []
        while (word := self.forced()) is not None:
            self.advance(word)
            run.append(word)
        return run

    @property
    def text(self) -> str:
        """The description written so far, without ``<eos>``."""
        return " ".join(w for w in self.words if w != EOS)


def forced_tokens(prompt: str | PromptScene | Sequence[PartialObject] | None, description: str,
                  max_objects: int = 2) -> tuple[int, int]:
    """How many of ``description``'s tokens (``<eos>`` counted) are forced given ``prompt``, and how many there are.

    The description is read in the order it names its objects; raises ParseError if the
    automaton does not allow it (it does not follow the prompt, or is not a description).
    """
    automaton = DescriptionAutomaton(prompt, max_objects)
    forced = 0
    for word in [*description.split(), EOS]:
        forced += automaton.forced() is not None
        automaton.advance(word)
    return forced, len(automaton.words)


@dataclass
class Decoded:
    """What :func:`constrained_decode` wrote: the descriptions, and what it cost.

    ``passes`` counts GPT-2's forward passes (the prefill included); ``tokens`` the tokens
    written, ``<eos>`` included, over all rows; ``forced`` those of them the automaton forced.
    """

    descriptions: list[str]
    passes: int
    tokens: int
    forced: int


@torch.no_grad()
def constrained_decode(lm: Any, tokenizer: Any, z: torch.Tensor, tasks: torch.Tensor,
                       automata: Sequence[DescriptionAutomaton], context: Any = None, *, do_sample: bool = False,
                       temperature: float = 1.0, generators: Sequence[torch.Generator] | None = None,
                       jump_forward: bool = True) -> Decoded:
    """Descriptions written by a :class:`~llmimg.stages.llm.model.ClipCapLM`, one automaton per row (see the module).

    Greedy by default; ``do_sample`` samples among the allowed words at ``temperature``,
    row k from ``generators[k]``. ``jump_forward=False`` reads every token in a pass of its
    own (masking only), for comparison. The automata are advanced in place.
    """
    if len(automata) != len(z):
        raise ValueError(f"got {len(automata)} automata for {len(z)} rows")
    if do_sample and (generators is None or len(generators) != len(z)):
        raise ValueError("sampling needs one torch.Generator per row")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    token = tokenizer.get_vocab()
    word = {i: w for w, i in token.items()}
    rows = torch.arange(len(z), device=z.device)
    runs = [a.take_forced() if jump_forward else [] for a in automata]
    written, forced, passes = sum(map(len, runs)), sum(map(len, runs)), 0
    x, mask = lm.prefix_embeds(z, tasks, context)  # the first pass reads the prefix too
    past = None
    while not all(a.done for a in automata):
        lengths = torch.tensor([len(r) for r in runs], device=z.device)
        ids = torch.full((len(runs), int(lengths.max())), PAD_ID, dtype=torch.long, device=z.device)
        for k, run in enumerate(runs):
            ids[k, :len(run)] = torch.tensor([token[w] for w in run], dtype=torch.long)
        real = (torch.arange(ids.shape[1], device=z.device)[None] < lengths[:, None]).long()
        last = lengths - 1 + (x.shape[1] if past is None else 0)  # each row's last real input
        x = torch.cat([x, lm.gpt2.get_input_embeddings()(ids)], 1) if past is None else \
            lm.gpt2.get_input_embeddings()(ids)
        mask = torch.cat([mask, real], 1)
        out = lm.gpt2(inputs_embeds=x, attention_mask=mask, position_ids=positions(mask)[:, -x.shape[1]:],
                      past_key_values=past, use_cache=True)
        past, passes = out.past_key_values, passes + 1
        logits = out.logits[rows, last].float()
        runs = []
        for k, automaton in enumerate(automata):
            if automaton.done:
                runs.append([])
                continue
            allowed = [token[w] for w in automaton.allowed()]
            scores = logits[k, allowed]
            if do_sample:
                choice = int(torch.multinomial(torch.softmax(scores / temperature, -1), 1, generator=generators[k]))
            else:
                choice = int(scores.argmax())
            forced += len(allowed) == 1  # without jump-forward, a forced word still costs its pass
            automaton.advance(word[allowed[choice]])
            runs.append([word[allowed[choice]], *(automaton.take_forced() if jump_forward else [])])
            written += len(runs[-1])
            forced += len(runs[-1]) - 1
    return Decoded([a.text for a in automata], passes, written, forced)


__all__ = ["Decoded", "DescriptionAutomaton", "constrained_decode", "forced_tokens"]
