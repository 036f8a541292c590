"""Checks for the exercises of notebook 01 (the math of the pipeline).

Each ``check_...`` compares a learner's answer with the closed form in
:mod:`llmimg.course.theory` and returns a :class:`~llmimg.course.exercises.feedback.Feedback`; none
raises on a wrong or missing answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmimg.course.exercises.feedback import (NO_ANSWER, Feedback, array_problem, check_array, check_function, check_number,
                                      is_unanswered)
from llmimg.course.theory import diffusion, language, pipeline

__all__ = ["check_add_noise", "check_alpha_bar", "check_bigram_perplexity", "check_elbo_weight", "check_infonce_limit",
           "check_pipeline_marginal"]


def check_alpha_bar(answer: Any, t: int = 500) -> Feedback:
    """ᾱ_t of the default DDPM schedule (linear β from 1e-4 to 0.02, 1000 steps, 0-indexed t)."""
    expected = float(diffusion.alpha_bars(diffusion.linear_betas())[t])
    feedback = check_number(
        answer, expected, rtol=1e-3, what=f"ᾱ_{t}",
        hint="ᾱ_t is the product of (1 - β_s) for s = 0 .. t (t + 1 factors), with "
             "β = np.linspace(1e-4, 0.02, 1000).",
    )
    if not feedback:
        return feedback
    return Feedback(True, f"{feedback.message}: the signal keeps √ᾱ_{t} = {expected ** 0.5:.3f} of its amplitude "
                          f"at step {t}, and the noise has √(1 − ᾱ_{t}) = {(1 - expected) ** 0.5:.3f}")


def check_infonce_limit(answer: Any, batch_size: int = 128) -> Feedback:
    """The largest mutual information (nats) InfoNCE can certify with a batch of ``batch_size``."""
    return check_number(
        answer, float(np.log(batch_size)), rtol=1e-3, what="the InfoNCE limit",
        hint="The loss is never negative, so the bound log N - L is at most log N (natural log).",
    )


def check_elbo_weight(answer: Any, t: int = 100) -> Feedback:
    """w_t = β_t² / (2 σ_t² α_t (1 - ᾱ_t)) with σ_t² = β̃_t, default DDPM schedule, 0-indexed t."""
    expected = float(diffusion.elbo_weight(t, diffusion.linear_betas(), kind="posterior"))
    return check_number(
        answer, expected, rtol=1e-3, what=f"w_{t}",
        hint="With σ_t² = β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), the weight simplifies to "
             "β_t / (2 α_t (1 - ᾱ_{t-1})); use ᾱ_{t-1} = alphas_cumprod[t - 1].",
    )


def check_pipeline_marginal(answer: Any, prompt: int = 1) -> Feedback:
    """The vector P(I | t) over the three images of the section-1 toy, for prompt index ``prompt``."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    expected = pipeline.image_given_prompt(pipeline.pipeline_toy())[prompt]
    try:
        total = float(np.sum(np.asarray(answer, dtype=float)))
    except (TypeError, ValueError):
        total = float("nan")
    hint = "Sum over descriptions: P(I | t) = Σ_d P(d | z(t)) P(I | d)."
    if np.isfinite(total) and not np.isclose(total, 1.0, atol=1e-3):
        hint += f" Your probabilities sum to {total:.4g}, not 1."
    return check_array(answer, expected, rtol=1e-3, atol=1e-4, what="P(I | t)", hint=hint)


def check_bigram_perplexity(answer: Any, words: Sequence[str] = ("a", "red", "circle")) -> Feedback:
    """Perplexity of one sequence under the bigram toy, counting the final ``<eos>`` token."""
    lm = language.bigram_toy()
    expected = float(np.exp(-language.sequence_log_prob(lm, words) / (len(words) + 1)))
    return check_number(
        answer, expected, rtol=1e-3, what="the perplexity",
        hint=f"exp(-log p / T) with T = {len(words) + 1} tokens: the words and <eos>.",
    )


def check_add_noise(answer: Any, n_cases: int = 8, seed: int = 0) -> Feedback:
    """Does the learner's ``add_noise(x0, eps, alpha_bar)`` draw x_t from q(x_t | x_0)?

    Hidden cases: arrays of a few shapes, and ᾱ from 1 (no noise yet) down to almost 0.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for alpha_bar in [1.0, 0.0001, *rng.uniform(0.01, 0.99, n_cases - 2)]:
        shape = tuple(int(k) for k in rng.integers(1, 5, size=int(rng.integers(1, 4))))
        x0, eps = rng.normal(size=shape), rng.normal(size=shape)
        cases.append(((x0, eps, float(alpha_bar)), np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps))

    def problem(result: Any, expected: np.ndarray, args: tuple) -> str | None:
        x0, eps, a = args
        if array_problem(result, a * x0 + (1 - a) * eps, "") is None and 0 < a < 1:
            return f"at ᾱ = {a:.4g} your x_t is ᾱ x0 + (1 − ᾱ) ε: the weights are the square roots of these"
        wrong = array_problem(result, expected, "x_t")
        return wrong and f"at ᾱ = {a:.4g}, {wrong} (x_t = √ᾱ x0 + √(1 − ᾱ) ε)"

    return check_function(answer, "add_noise", cases, problem)
