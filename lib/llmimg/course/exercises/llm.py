"""Checks for notebook 04 (the LLM): tokens, perplexity, the oracle's probabilities, the KV cache.

The expected values are computed here from first principles (the tokenizer's word
split, the world's definitions, the transformer's logits), not by the code the notebook
teaches; every check returns a :class:`~llmimg.course.exercises.feedback.Feedback` and never
raises on a wrong, missing or malformed answer.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from llmimg.core.data.captions import parse_description, parse_prompt
from llmimg.core.data.world import HELDOUT_PAIRS, POSITIONS, SIZES, allowed_colours
from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, as_number, check_function, check_number, is_unanswered

__all__ = ["check_lm_loss", "check_kv_cache_positions", "check_model_probability", "check_oracle_probability",
           "check_perplexity", "check_relation_layouts", "check_token_count", "oracle_probability"]


def _never_raises(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
    """Turn any error while reading an answer into a "not yet" instead of a traceback."""

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Feedback:
        try:
            return check(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a learner's answer may be anything
            return Feedback(False, f"could not read the answer ({type(err).__name__}: {err})")

    return wrapper


def _plain(answer: Any) -> Any:
    """A torch tensor as NumPy (detached), anything else unchanged."""
    if hasattr(answer, "detach"):
        return answer.detach().cpu().numpy()
    return answer


@_never_raises
def check_token_count(answer: Any, text: str = "a small green cross in the bottom right") -> Feedback:
    """How many token ids encode ``text``: its words plus ``<bos>`` and ``<eos>``, no padding."""
    n_words = len(re.findall(r"\w+|[^\w\s]+", text))  # the tokenizer splits words and punctuation
    return check_number(_plain(answer), n_words + 2, rtol=0, atol=0.5, what="the number of tokens",
                        hint="one token per word (the vocabulary is word-level), plus <bos> and <eos>; "
                             "padding does not count")


@_never_raises
def check_perplexity(answer: Any, loss: float = 0.55) -> Feedback:
    """Perplexity of a model whose mean loss is ``loss`` nats per token."""
    return check_number(_plain(answer), math.exp(loss), rtol=1e-3, what="the perplexity",
                        hint="perplexity = exp(mean negative log-likelihood per token), natural log")


def oracle_probability(prompt: str, description: str,
                       heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS) -> float:
    """P(description | prompt) under the data's generative process (the oracle upsampler), by enumeration.

    Open colours are uniform over the shape's training colours, open sizes uniform,
    and the objects without a stated position take distinct free cells uniformly, in
    order. A scene that several assignments of prompt objects to scene objects explain
    (``"a circle and a circle"``) adds up their probabilities.
    """
    partials = parse_prompt(prompt)
    scene = parse_description(description)
    if len(partials) != len(scene):
        return 0.0
    n_free = len(POSITIONS) - sum(p.position is not None for p in partials)
    n_open = sum(p.position is None for p in partials)
    p_positions = 1.0 / math.perm(n_free, n_open)  # an ordered choice of distinct free cells
    total = 0.0
    for objects in itertools.permutations(scene.objects):
        if not all(p.matches(o) for p, o in zip(partials, objects)):
            continue
        prob = p_positions
        for p, o in zip(partials, objects):
            if p.colour is None:
                colours = allowed_colours(p.shape, heldout_pairs)
                prob *= (o.colour in colours) / len(colours)
            if p.size is None:
                prob /= len(SIZES)
        total += prob
    return total


@_never_raises
def check_oracle_probability(answer: Any, prompt: str = "a blue square and a circle",
                             description: str = ("a small blue square in the top left and "
                                                 "a large white circle in the center")) -> Feedback:
    """The probability that the oracle upsampler completes ``prompt`` into exactly ``description``."""
    expected = oracle_probability(prompt, description)
    return check_number(
        _plain(answer), expected, rtol=1e-3, atol=0, what="P(description | prompt)",
        hint="multiply 1/(number of choices) for every open attribute: colours among the shape's "
             "training colours (mind the held-out pairs), 2 sizes, and the free cells for the "
             "positions, which two objects cannot share",
    )


def relation_layouts(relation: str = "left of") -> int:
    """Ordered pairs of distinct cells (subject, object) of the 3×3 grid in which ``relation`` holds, by geometry.

    GenEval's rule, from the angle rather than the library's inequality: the step from the
    object's cell centre to the subject's points the relation's way within 60° of its axis.
    """
    way = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}[relation]
    cells = [(r, c) for r in range(3) for c in range(3)]
    count = 0
    for (ra, ca), (rb, cb) in itertools.permutations(cells, 2):
        dr, dc = ra - rb, ca - cb
        cos = (dr * way[0] + dc * way[1]) / math.hypot(dr, dc)
        count += cos > math.cos(math.radians(60)) + 1e-9
    return count


@_never_raises
def check_relation_layouts(answer: Any, relation: str = "left of") -> Feedback:
    """In how many ways the planner may place the two objects of "a red circle to the left of a blue square"."""
    return check_number(_plain(answer), relation_layouts(relation), rtol=0, atol=0.5,
                        what="the number of layouts",
                        hint="count (circle cell, square cell) pairs: one column apart the rows may differ by at "
                             "most 1 (3·1² > Δrow²), two columns apart by anything (3·2² > Δrow²)")


@_never_raises
def check_kv_cache_positions(answer: Any, prefix: int = 5, new_tokens: int = 17) -> Feedback:
    """Token positions the transformer processes to write ``new_tokens`` after ``prefix`` input vectors.

    ``answer`` is the pair ``(without_cache, with_cache)``. Without the cache, step k
    (k = 0 … n-1) reruns all ``prefix + k`` positions; with it, the first step processes
    the ``prefix`` positions and every later step only the one new token.
    """
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    if isinstance(answer, (tuple, list)) and any(is_unanswered(a) for a in answer):
        return Feedback(False, NO_ANSWER)
    values = np.asarray(_plain(answer), dtype=float).ravel()
    if values.shape != (2,):
        return Feedback(False, "give two numbers: (positions without the cache, positions with the cache)")
    without = sum(prefix + k for k in range(new_tokens))
    with_cache = prefix + (new_tokens - 1)
    right = np.isclose(values, [without, with_cache], rtol=0, atol=0.5)
    if right.all():
        return Feedback(True, f"{without} positions without the cache, {with_cache} with it "
                              f"({without / with_cache:.1f}× fewer)")
    if np.allclose(values[::-1], [without, with_cache], atol=0.5):
        return Feedback(False, "the two numbers are swapped: the first is *without* the cache (the larger)")
    wrong = " and ".join(name for name, ok in zip(("without the cache", "with the cache"), right) if not ok)
    return Feedback(False, f"the count {wrong} is off. Without the cache, step k (k = 0 … {new_tokens - 1}) "
                           f"feeds all {prefix} + k positions; with it, only the first step feeds the "
                           "prefix and every later step feeds one token (the last token written is never fed)")


def _description_log_prob(llm: Any, prompt: str, description: str) -> float:
    """log P(description | prompt) under ``llm`` (upsampling), summed from the transformer's logits."""
    import torch

    from llmimg.stages.llm import TASKS, positions

    lm = llm.lm
    with torch.no_grad():
        z = llm.clip.encode_text([prompt]).to(llm.device)
        task = torch.full((1,), TASKS.index("upsample"), dtype=torch.long, device=llm.device)
        start, mask = lm.prefix_embeds(z, task, llm.context(prompts=[prompt]))  # prefix, prompt tokens, <bos>
        ids = torch.tensor([llm.tokenizer(description)["input_ids"]], device=llm.device)  # <bos> … <eos>
        targets = ids[:, 1:]
        embeds = torch.cat([start, lm.gpt2.get_input_embeddings()(targets)], dim=1)
        mask = torch.cat([mask, torch.ones_like(targets)], dim=1)
        logits = lm.gpt2(inputs_embeds=embeds, attention_mask=mask,
                         position_ids=positions(mask)).logits[:, start.shape[1] - 1:-1]
        log_p = torch.log_softmax(logits.double(), dim=-1).gather(-1, targets[..., None])
    return float(log_p.sum())


@_never_raises
def check_model_probability(llm: Any, answer: Any, prompt: str = "a red circle",
                            description: str = "a large red circle in the center") -> Feedback:
    """The probability the trained ``llm`` gives ``description`` when upsampling ``prompt``."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    expected = math.exp(_description_log_prob(llm, prompt, description))
    feedback = check_number(
        _plain(answer), expected, rtol=2e-3, atol=0, what="P(description | prompt)",
        hint="the loss is the mean over the T predicted tokens (the words and <eos>, not <bos>), "
             "so P = exp(-T × loss)",
    )
    if feedback:
        oracle = oracle_probability(prompt, description)
        return Feedback(True, f"{feedback.message}; the data's own probability is {oracle:.4g}")
    return feedback


def check_lm_loss(answer: Any, n_cases: int = 8, seed: int = 0) -> Feedback:
    """Does the learner's ``lm_loss(logits, targets, mask)`` give the mean NLL of the real tokens?

    ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)`` token ids, ``mask`` ``(B, T)`` with 1 for
    real tokens and 0 for padding; sequences have different lengths.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        b, t, v = int(rng.integers(2, 5)), int(rng.integers(3, 8)), int(rng.integers(3, 10))
        logits = rng.normal(size=(b, t, v)) * 2
        targets = rng.integers(0, v, size=(b, t))
        lengths = rng.integers(1, t + 1, size=b)
        lengths[0] = t - 1 if t > 1 else 1  # at least one sequence with padding
        mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int64)
        cases.append(((logits, targets, mask), None))

    def nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        import torch

        log_probs = torch.from_numpy(logits).log_softmax(-1)
        return -log_probs.gather(-1, torch.from_numpy(targets)[..., None])[..., 0].numpy()

    def problem(result: Any, _: Any, args: tuple) -> str | None:
        value = as_number(result)
        if value is None:
            return f"`lm_loss` should return one number, got {type(result).__name__}"
        logits, targets, mask = args
        per_token = nll(logits, targets)
        expected = float((per_token * mask).sum() / mask.sum())
        if math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-6):
            return None
        if math.isclose(value, float(per_token.mean()), rel_tol=1e-4):
            return "your loss averages over the padding too: count only the tokens where mask is 1"
        if math.isclose(value, float(((per_token * mask).sum(1) / mask.sum(1)).mean()), rel_tol=1e-4):
            return "your loss averages per sequence first: average over all real tokens at once"
        return f"your loss is {value:.5g}, expected {expected:.5g}"

    return check_function(answer, "lm_loss", cases, problem)
