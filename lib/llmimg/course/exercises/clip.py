"""Checks for notebook 03 (CLIP): the symmetric contrastive loss, its limits, and the trained model.

The closed-form checks compute the expected value here, independently of open_clip and
:mod:`llmimg.course.theory`; :func:`check_retrieving_prompt` runs the learner's prompt through a
trained :class:`~llmimg.stages.clip.ShapesCLIP`. None raises on a wrong, missing or malformed answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, as_number, check_function, check_number, is_unanswered

__all__ = ["check_contrastive_loss", "EXERCISE_SIMILARITIES", "check_clip_loss", "check_loss_floor",
           "check_retrieving_prompt", "check_uniform_loss"]

# The cosine similarities of exercise 2: rows are images, columns texts, pairs on the diagonal.
EXERCISE_SIMILARITIES: tuple[tuple[float, ...], ...] = (
    (0.9, 0.8, 0.1),
    (0.1, 0.7, 0.0),
    (0.2, 0.6, 0.5),
)


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _directional_losses(similarities: np.ndarray, temperature: float) -> tuple[float, float]:
    """(image→text, text→image) mean cross-entropies of ``similarities / temperature``, pairs on the diagonal."""
    logits = similarities / temperature
    diag = np.diagonal(logits)
    return float(np.mean(_lse(logits, 1) - diag)), float(np.mean(_lse(logits, 0) - diag))


def check_uniform_loss(answer: Any, batch_size: int = 256) -> Feedback:
    """CLIP's loss when every similarity in a batch of ``batch_size`` pairs is equal (a model that knows nothing)."""
    expected = math.log(batch_size)
    if not is_unanswered(answer):
        try:
            value = float(np.asarray(answer, dtype=float).reshape(()))
        except (TypeError, ValueError):
            value = float("nan")
        if np.isclose(value, math.log2(batch_size), rtol=1e-3):
            return Feedback(False, "that is log base 2: the loss is a cross-entropy in nats, use the natural log")
        if np.isclose(value, 1 / batch_size, rtol=1e-3):
            return Feedback(False, f"1/{batch_size} is the probability each pair gets; the loss is -log of it")
    return check_number(answer, expected, rtol=1e-4, what="the loss",
                        hint="equal logits make the softmax uniform over the batch, in both directions")


def check_clip_loss(similarities: Any, temperature: Any, answer: Any) -> Feedback:
    """The symmetric CLIP loss of a square matrix of cosine ``similarities`` (images × texts) at ``temperature``."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    try:
        s = np.asarray(similarities, dtype=float)
        tau = float(temperature)
        if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 2 or not tau > 0:
            raise ValueError
    except (TypeError, ValueError):
        return Feedback(False, "the exercise needs a square similarity matrix (at least 2×2) and a positive "
                               "temperature: run the cell that defines them again")
    i2t, t2i = _directional_losses(s, tau)
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return Feedback(False, f"the loss should be a single number, got {type(answer).__name__}")
    close = lambda x: bool(np.isclose(value, x, rtol=1e-3, atol=1e-6))  # noqa: E731
    if close((i2t + t2i) / 2):
        return Feedback(True, f"the loss is {value:.6g}: the mean of image→text {i2t:.4f} and text→image {t2i:.4f}")
    if close(i2t) or close(t2i):
        return Feedback(False, "that is one direction only; CLIP averages the image→text (rows) and "
                               "text→image (columns) cross-entropies")
    if close(sum(_directional_losses(s, 1.0)) / 2):
        return Feedback(False, "you left out the temperature: the logits are similarities / temperature")
    if close(sum(_directional_losses(s, 1 / tau)) / 2):
        return Feedback(False, "you multiplied by the temperature; divide by it (logit_scale = 1 / temperature)")
    return Feedback(False, f"the loss is {value:.6g}, which is off. Each row i is a softmax over texts, each "
                           f"column j one over images; the right class is the diagonal.")


def check_loss_floor(answer: Any, batch_size: int = 128, temperature: float = 1.0) -> Feedback:
    """The loss of perfect embeddings (each pair identical, different pairs orthogonal) at a fixed ``temperature``."""
    expected = math.log(1 + (batch_size - 1) * math.exp(-1 / temperature))
    return check_number(
        answer, expected, rtol=1e-3, what="the loss",
        hint=f"a matching pair has cosine 1, the {batch_size - 1} others cosine 0: the right logit is "
             f"1/τ, the others 0; both directions give the same value.",
    )


def check_retrieving_prompt(clip: Any, images: Any, k: int, answer: Any) -> Feedback:
    """Does the prompt ``answer`` retrieve image ``k`` first among ``images`` with the trained ``clip``?"""
    import torch

    from llmimg.core.text import PromptError

    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    if not isinstance(answer, str):
        return Feedback(False, f"the answer should be a prompt (a string), got {type(answer).__name__}")
    try:
        text = clip.encode_text([answer])
    except PromptError as err:
        return Feedback(False, f"the model cannot read this prompt: {err}")
    try:
        sims = (text @ clip.encode_image(np.asarray(images)).T)[0].float().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        return Feedback(False, f"the images of the exercise are not usable ({err}); run the cells above again")
    order = torch.argsort(sims, descending=True).tolist()
    if k not in order:
        return Feedback(False, f"there is no image {k!r} among the {len(order)} images (they are numbered from 0)")
    rank = order.index(k) + 1
    if rank == 1:
        margin = float(sims[k] - sims[order[1]]) if len(order) > 1 else float("nan")
        return Feedback(True, f"{answer!r} retrieves image {k} first (similarity {float(sims[k]):.3f}, "
                              f"{margin:.3f} above the runner-up)")
    return Feedback(False, f"{answer!r} retrieves image {order[0]} first (similarity {float(sims[order[0]]):.3f}); "
                           f"image {k} is ranked {rank} of {len(order)} (similarity {float(sims[k]):.3f}). Say what "
                           f"sets image {k} apart from the others")


def _cross_entropy_diagonal(logits: np.ndarray) -> float:
    """Mean cross-entropy of each row against its diagonal entry."""
    import torch

    return float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.arange(len(logits))))


def check_contrastive_loss(answer: Any, n_cases: int = 8, seed: int = 0) -> Feedback:
    """Does the learner's ``contrastive_loss(image_emb, text_emb, temperature)`` compute CLIP's loss?

    Embeddings ``(B, D)`` not of unit length, pairs on the diagonal; the loss is the mean
    of the image→text and text→image cross-entropies of the cosine similarities / T.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        b, d = int(rng.integers(2, 9)), int(rng.integers(2, 7))
        image, text = rng.normal(size=(b, d)) * 3, rng.normal(size=(b, d)) * 0.5
        temperature = float(rng.uniform(0.05, 1.0))
        cases.append(((image, text, temperature), None))

    def parts(image: np.ndarray, text: np.ndarray, temperature: float, normalise: bool = True) -> tuple[float, float]:
        if normalise:
            image = image / np.linalg.norm(image, axis=1, keepdims=True)
            text = text / np.linalg.norm(text, axis=1, keepdims=True)
        logits = image @ text.T / temperature
        return _cross_entropy_diagonal(logits), _cross_entropy_diagonal(logits.T)

    def problem(result: Any, _: Any, args: tuple) -> str | None:
        value = as_number(result)
        if value is None:
            return f"`contrastive_loss` should return one number, got {type(result).__name__}"
        i2t, t2i = parts(*args)
        if math.isclose(value, (i2t + t2i) / 2, rel_tol=1e-4, abs_tol=1e-6):
            return None
        if any(math.isclose(value, one, rel_tol=1e-4) for one in (i2t, t2i)):
            return "your loss is one direction only: average image→text and text→image"
        if math.isclose(value, sum(parts(*args, normalise=False)) / 2, rel_tol=1e-4):
            return "your loss uses the raw embeddings: divide each by its length first (cosine similarity)"
        return f"your loss is {value:.5g}, expected {(i2t + t2i) / 2:.5g}"

    return check_function(answer, "contrastive_loss", cases, problem)
