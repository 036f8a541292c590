"""The autoregressive likelihood of a language model, on a bigram (Markov) toy.

log p(w_1 .. w_T) = Σ_t log p(w_t | w_<t) + log p(<eos> | w_≤T): a language model is a
distribution over sequences of *any* length only because of the end-of-sequence token.
For a bigram model p(w_t | w_<t) = p(w_t | w_{t-1}), everything is exact:

* the probability that a sequence has at most L words, by dynamic programming;
* the entropy of the whole sequence, H = Σ_s E[visits to s] · H(next token | s), and the
  per-token entropy H / E[tokens], whose exponential is the model's perplexity.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOS = "<bos>"
EOS = "<eos>"


@dataclass(frozen=True)
class BigramLM:
    """A bigram model: ``transitions[s, k]`` = p(token k | previous state s).

    States are ``(<bos>, *words)``; tokens are ``(*words, <eos>)``. Rows sum to 1.
    """

    words: tuple[str, ...]
    transitions: np.ndarray

    @property
    def tokens(self) -> tuple[str, ...]:
        """The tokens a step can emit: the words, then ``<eos>``."""
        return (*self.words, EOS)

    @property
    def states(self) -> tuple[str, ...]:
        """The states a step conditions on: ``<bos>``, then the words."""
        return (BOS, *self.words)


def bigram_toy() -> BigramLM:
    """The bigram model of notebook 01 over five words (fixed numbers)."""
    words = ("a", "red", "blue", "circle", "square")
    #        a     red   blue  circle square <eos>
    p = np.array(
        [
            [0.80, 0.10, 0.10, 0.00, 0.00, 0.00],  # <bos>
            [0.00, 0.45, 0.35, 0.10, 0.10, 0.00],  # a
            [0.00, 0.05, 0.05, 0.50, 0.30, 0.10],  # red
            [0.00, 0.05, 0.05, 0.30, 0.50, 0.10],  # blue
            [0.30, 0.05, 0.05, 0.00, 0.00, 0.60],  # circle
            [0.30, 0.05, 0.05, 0.00, 0.00, 0.60],  # square
        ]
    )
    return BigramLM(words=words, transitions=p)


def sequence_log_prob(lm: BigramLM, words: Sequence[str]) -> float:
    """Chain rule: Σ_t log p(w_t | w_{t-1}) + log p(<eos> | w_T), starting from ``<bos>``.

    A sequence with an impossible transition has log-probability ``-inf``.
    """
    tokens = lm.tokens
    state = 0
    total = 0.0
    for w in list(words) + [EOS]:
        k = tokens.index(w)
        p = float(lm.transitions[state, k])
        if p <= 0.0:
            return float("-inf")
        total += float(np.log(p))
        state = k + 1  # the state after emitting word k (unused after <eos>)
    return total


def sample_sequences(lm: BigramLM, n: int, rng: np.random.Generator, max_len: int = 1000) -> list[tuple[str, ...]]:
    """Draw ``n`` sequences (without ``<eos>``) by ancestral sampling, all chains at once."""
    cdf = np.cumsum(lm.transitions, axis=1)
    eos = len(lm.words)
    state = np.zeros(n, dtype=int)
    alive = np.ones(n, dtype=bool)
    out: list[list[str]] = [[] for _ in range(n)]
    for _ in range(max_len):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        u = rng.random(idx.size)[:, None]
        k = np.minimum((u > cdf[state[idx]]).sum(axis=1), eos)
        for i, kk in zip(idx, k):
            if kk == eos:
                alive[i] = False
            else:
                out[i].append(lm.words[kk])
        state[idx] = k + 1
    return [tuple(s) for s in out]


def length_distribution(lm: BigramLM, max_len: int) -> np.ndarray:
    """P(the sequence has exactly k words), k = 0 .. max_len, by dynamic programming.

    α_k[s] = P(k words emitted, no <eos> yet, current state s); P(len = k) = α_k · p(<eos> | ·).
    """
    n_words = len(lm.words)
    alpha = np.zeros(n_words + 1)
    alpha[0] = 1.0
    out = np.zeros(max_len + 1)
    for k in range(max_len + 1):
        out[k] = alpha @ lm.transitions[:, n_words]
        nxt = np.zeros_like(alpha)
        nxt[1:] = alpha @ lm.transitions[:, :n_words]
        alpha = nxt
    return out


def enumerate_sequences(lm: BigramLM, max_len: int) -> dict[tuple[str, ...], float]:
    """Every sequence of at most ``max_len`` words with its probability (brute force)."""
    out = {}
    for length in range(max_len + 1):
        for seq in itertools.product(lm.words, repeat=length):
            out[seq] = float(np.exp(sequence_log_prob(lm, seq)))
    return out


def expected_visits(lm: BigramLM) -> np.ndarray:
    """Expected number of times each state is left (one token emitted each time)."""
    n_words = len(lm.words)
    q = np.zeros((n_words + 1, n_words + 1))
    q[:, 1:] = lm.transitions[:, :n_words]
    start = np.zeros(n_words + 1)
    start[0] = 1.0
    return np.linalg.solve((np.eye(n_words + 1) - q).T, start)


def expected_tokens(lm: BigramLM) -> float:
    """E[number of tokens per sequence], counting the final ``<eos>``."""
    return float(expected_visits(lm).sum())


def sequence_entropy(lm: BigramLM) -> float:
    """Entropy H(W) in nats of the whole sequence (including when it stops)."""
    p = lm.transitions
    with np.errstate(divide="ignore", invalid="ignore"):
        h_rows = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return float(expected_visits(lm) @ h_rows)


def entropy_per_token(lm: BigramLM) -> float:
    """H(W) / E[tokens]: the cross-entropy per token a perfect model reaches on long samples."""
    return sequence_entropy(lm) / expected_tokens(lm)


def cross_entropy_per_token(lm: BigramLM, sequences: Sequence[Sequence[str]]) -> float:
    """-Σ log p(sequence) / Σ tokens over ``sequences`` (each counts its ``<eos>``)."""
    total = sum(sequence_log_prob(lm, s) for s in sequences)
    n_tokens = sum(len(s) + 1 for s in sequences)
    return -total / n_tokens


def perplexity(lm: BigramLM, sequences: Sequence[Sequence[str]]) -> float:
    """exp(cross-entropy per token): the effective number of choices per token."""
    return float(np.exp(cross_entropy_per_token(lm, sequences)))
