"""Checks for notebook 05 (the generator): the forward process, guidance, the unshuffled latent, ShapesEval."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmimg.course.exercises.feedback import Feedback, array_problem, check_array, check_function, check_number

__all__ = ["check_ddim_step", "check_signal_fraction", "check_guided_noise", "check_latent_shape", "check_all_correct"]


def check_signal_fraction(alpha_bar: float, answer: Any) -> Feedback:
    """What fraction of x_t's variance comes from the image x_0, for unit-variance x_0 and noise?"""
    return check_number(answer, alpha_bar, what="the image's share of the variance",
                        hint="x_t = sqrt(ᾱ) x_0 + sqrt(1 − ᾱ) ε: square the two coefficients")


def check_guided_noise(uncond: Any, cond: Any, scale: float, answer: Any) -> Feedback:
    """Classifier-free guidance: combine the two noise predictions with guidance scale ``scale``."""
    expected = np.asarray(uncond, dtype=float) + scale * (np.asarray(cond, dtype=float) - np.asarray(uncond, dtype=float))
    return check_array(answer, expected, what="the guided noise prediction",
                       hint="start from the unconditional prediction and move `scale` times the difference")


def check_latent_shape(factor: int, answer: Any, image_size: int = 32) -> Feedback:
    """Shape (channels, height, width) of a 3×image_size×image_size image after a pixel unshuffle by ``factor``."""
    expected = np.array([3 * factor**2, image_size // factor, image_size // factor], dtype=float)
    return check_array(answer, expected, what="the latent shape",
                       hint="each factor×factor patch of 3 channels becomes one position with 3·factor² channels")


def check_all_correct(per_object: Any, answer: Any) -> Feedback:
    """All-correct rate of images given per-image lists of per-attribute right/wrong flags."""
    rows = [bool(np.all(np.asarray(r, dtype=bool))) for r in per_object]
    return check_number(answer, float(np.mean(rows)), what="the all-correct rate",
                        hint="an image counts only if every attribute of it is right")


def check_ddim_step(answer: Any, n_cases: int = 8, seed: int = 0) -> Feedback:
    """Does the learner's ``ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev)`` take one deterministic DDIM step?

    From the predicted noise: x̂0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, then
    x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev) ε (η = 0: no fresh noise).
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        shape = (int(rng.integers(1, 4)), 2, 2)
        x_t, eps = rng.normal(size=shape), rng.normal(size=shape)
        a_t = float(rng.uniform(0.01, 0.9))
        a_prev = float(rng.uniform(a_t, 1.0))  # one step towards the image: more signal
        x0 = (x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        cases.append(((x_t, eps, a_t, a_prev), np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps))

    def problem(result: Any, expected: np.ndarray, args: tuple) -> str | None:
        x_t, eps, a_t, a_prev = args
        x0 = (x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        if array_problem(result, x0, "") is None:
            return "you returned the clean-image estimate x̂0: step to ᾱ_prev from it (re-noise with ε)"
        wrong = array_problem(result, expected, "x_prev")
        return wrong and f"at ᾱ_t = {a_t:.3f}, ᾱ_prev = {a_prev:.3f}: {wrong}"

    return check_function(answer, "ddim_step", cases, problem)
