"""Checks for notebook 07 (joint training): REINFORCE's loss, the leave-one-out baseline, a denoising step's
likelihood, a straight-through token, reading the results. The code exercises are graded on their gradients as
well as their values."""

from __future__ import annotations

from typing import Any

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, as_number, check_function, is_unanswered

__all__ = ["check_leave_one_out_loss", "check_reinforce_loss", "check_regime_difference", "check_step_log_prob",
           "check_straight_through"]

NO_GRADIENT = ("{name} returns a value no gradient flows through ({why}): keep it a tensor built from the "
               "inputs (no float(), .item() or .detach()), or the optimiser would train nothing")


def _gradients(loss: Any, inputs: list[Any]) -> list[Any] | None:
    """d loss / d inputs (zeros where it does not depend on one), or None if no gradient flows through ``loss``."""
    import torch

    if not (torch.is_tensor(loss) and loss.requires_grad):
        return None
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def check_reinforce_loss(answer: Any) -> Feedback:
    """Does the learner's ``reinforce_loss(rewards, nll)`` give mean((r - mean r) · nll), gradient included?

    ``rewards`` (B,) are the rewards of B sampled descriptions and ``nll`` (B,) their
    -log q; the loss's gradient is REINFORCE's estimate of -∇ E[r] with the batch mean as
    baseline: ∂L/∂nll = (r - r̄)/B, that is ∂L/∂log q = -(r - r̄)/B. The check takes that
    gradient too, so an answer built on ``nll.detach()`` or ``float(...)``, which would train
    nothing, does not pass.
    """
    import torch

    cases = []
    for rewards, nll in (([1.0, 0.0, 1.0, 1.0], [12.0, 15.0, 9.0, 11.0]), ([0.0, 1.0], [3.0, 4.0]),
                         ([1.0, 1.0, 1.0], [5.0, 6.0, 7.0])):
        r, n = torch.tensor(rewards), torch.tensor(nll)
        cases.append(((r, n), float(((r - r.mean()) * n).mean())))

    def problem(result: Any, expected: float, args: tuple) -> str | None:
        r, n = args
        got = as_number(result)
        if got is None:
            return f"reinforce_loss should return a number (a scalar tensor), got {type(result).__name__}"
        if abs(got - expected) <= 1e-5:
            nll = n.clone().requires_grad_(True)
            grads = _gradients(answer(r.clone(), nll), [nll])
            if grads is None:
                return NO_GRADIENT.format(name="reinforce_loss", why="nll was detached or turned into a number")
            if not torch.allclose(grads[0], (r - r.mean()) / len(r), atol=1e-6):
                return (f"the value is right but d loss / d nll is {grads[0].tolist()}, expected (r - r̄)/B = "
                        f"{((r - r.mean()) / len(r)).tolist()}: part of the loss was cut from the graph")
            return None
        if abs(got - float((r * n).mean())) <= 1e-5:
            return "there is no baseline: subtract the batch's mean reward from each reward first"
        if abs(got + expected) <= 1e-5:
            return "the sign is flipped: nll is -log q, so minimising (r - b) · nll raises q where r > b"
        if abs(got - float(((r - r.mean()) * n).sum())) <= 1e-5:
            return "take the mean over the batch, not the sum"
        return f"reinforce_loss gave {got:.4f}, expected {expected:.4f}"

    return check_function(answer, "reinforce_loss", cases, problem)


def check_leave_one_out_loss(answer: Any) -> Feedback:
    """Does ``rloo_loss(rewards, log_probs)`` give −mean((r_i − mean_{j≠i} r_j) · log π_i), gradient included?

    The leave-one-out baseline (RLOO, Kool et al. 2019; Ahmadian et al. 2024) scores each of
    B samples of one prompt against the mean of the other B − 1: it does not depend on the
    sample it is subtracted from, so the estimate stays unbiased. ∂L/∂log π_i must be
    −(r_i − b_i)/B; an answer cut from the graph (``.detach()``, ``float``) fails.
    """
    import torch

    cases = []
    for rewards, logp in (([1.0, 0.0, 1.0, 1.0], [-3.0, -2.0, -4.0, -1.0]), ([0.0, 1.0], [-1.5, -0.5]),
                          ([0.2, 0.9, 0.4], [-1.0, -2.0, -3.0])):
        r, lp = torch.tensor(rewards), torch.tensor(logp)
        cases.append(((r, lp), float(-((r - _others_mean(r)) * lp).mean())))

    def problem(result: Any, expected: float, args: tuple) -> str | None:
        r, lp = args
        got = as_number(result)
        if got is None:
            return f"rloo_loss should return a number (a scalar tensor), got {type(result).__name__}"
        if abs(got - expected) <= 1e-5:
            logp = lp.clone().requires_grad_(True)
            grads = _gradients(answer(r.clone(), logp), [logp])
            if grads is None:
                return NO_GRADIENT.format(name="rloo_loss", why="log_probs was detached or turned into a number")
            right = -(r - _others_mean(r)) / len(r)
            if not torch.allclose(grads[0], right, atol=1e-6):
                return (f"the value is right but d loss / d log_probs is {grads[0].tolist()}, expected "
                        f"-(r - b)/B = {right.tolist()}: the baseline must not carry gradient")
            return None
        if abs(got - float(-((r - r.mean()) * lp).mean())) <= 1e-5:
            return "that is the batch-mean baseline; leave sample i out of its own baseline: the mean of the others"
        if abs(got + expected) <= 1e-5:
            return "the sign is flipped: minimising the loss should raise log π where r beats its baseline"
        if abs(got - float(-(r * lp).mean())) <= 1e-5:
            return "there is no baseline: subtract from r_i the mean reward of the other samples"
        return f"rloo_loss gave {got:.4f}, expected {expected:.4f}"

    return check_function(answer, "rloo_loss", cases, problem)


def _others_mean(r: Any) -> Any:
    """Each entry's leave-one-out mean: the mean of the other entries."""
    return (r.sum() - r) / (len(r) - 1)


def check_step_log_prob(answer: Any) -> Feedback:
    """Does ``step_log_prob(x_prev, mean, sigma)`` give log N(x_prev; mean, σ²I) per row, averaged over its
    dimensions, with its gradient with respect to ``mean`` (how the policy gradient reaches the UNet)?"""
    import math

    import torch

    def log_prob(x: Any, mean: Any, sigma: float) -> Any:
        return (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)

    g = torch.Generator().manual_seed(0)
    cases = []
    for shape, sigma in (((2, 3, 4, 4), 0.5), ((3, 48, 8, 8), 0.05), ((1, 2, 2, 2), 1.3)):
        mean, x = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        cases.append(((x, mean, sigma), log_prob(x, mean, sigma)))

    def problem(result: Any, expected: Any, args: tuple) -> str | None:
        x, mean, sigma = args
        if not torch.is_tensor(result) or result.shape != expected.shape:
            return (f"step_log_prob should return one log-probability per row, shape {tuple(expected.shape)}, "
                    f"got {getattr(result, 'shape', type(result).__name__)}")
        if torch.allclose(result, expected, atol=1e-4, rtol=1e-4):
            m = mean.clone().requires_grad_(True)
            out = answer(x, m, sigma)
            grads = _gradients(out.sum() if torch.is_tensor(out) else out, [m])
            if grads is None:
                return NO_GRADIENT.format(name="step_log_prob", why="mean was detached")
            right = (x - mean) / sigma**2 / mean[0].numel()
            if not torch.allclose(grads[0], right, atol=1e-5, rtol=1e-4):
                return "the value is right but its gradient with respect to mean is not: keep mean in the graph"
            return None
        summed = expected * x[0].numel()
        if torch.allclose(result, summed, atol=1e-3, rtol=1e-4):
            return "that is the sum over the row's dimensions; average it (DDPO's scale, the library's)"
        if torch.allclose(result, expected + math.log(sigma), atol=1e-4) or \
                torch.allclose(result, expected + 0.5 * math.log(2 * math.pi), atol=1e-4):
            return "a constant is missing: log N = -z²/2 - log σ - log(2π)/2 per dimension, z = (x - mean)/σ"
        return "not the Gaussian's log-density: per dimension -z²/2 - log σ - log(2π)/2 with z = (x_prev - mean)/σ"

    return check_function(answer, "step_log_prob", cases, problem)


def check_straight_through(answer: Any) -> Feedback:
    """Does ``straight_through_row(token, logits)`` give the one-hot of ``token`` with softmax(logits)'s gradient?

    The row's value must be exactly ``one_hot(token, V)`` (what the generator reads) and
    its Jacobian with respect to ``logits`` that of ``softmax(logits)``: for a loss ⟨row, w⟩,
    ∂/∂logits = (diag p − p pᵀ) w. A plain one-hot passes no gradient; the softmax itself
    has the gradient but the wrong value.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    cases = [((token, torch.randn(size, generator=g)), torch.nn.functional.one_hot(torch.tensor(token), size).float())
             for token, size in ((3, 5), (0, 8), (6, 7))]

    def problem(result: Any, expected: Any, args: tuple) -> str | None:
        token, logits = args
        if not torch.is_tensor(result) or result.shape != expected.shape:
            return (f"straight_through_row should return one row of {len(expected)} numbers, got "
                    f"{getattr(result, 'shape', type(result).__name__)}")
        if torch.allclose(result, logits.softmax(-1), atol=1e-6):
            return "that is the softmax itself: its gradient is right, but the generator must read the one-hot"
        if not torch.allclose(result.float(), expected, atol=1e-6):
            return f"the value should be the one-hot of token {token}: 1 there, 0 elsewhere"
        x = logits.clone().requires_grad_(True)
        w = torch.randn(len(expected), generator=torch.Generator().manual_seed(token))
        out = answer(token, x)
        grads = _gradients((out * w).sum() if torch.is_tensor(out) else out, [x])
        if grads is None or not grads[0].abs().sum() > 0:
            return NO_GRADIENT.format(name="straight_through_row", why="a one-hot alone has none; add p - p.detach()")
        p = logits.softmax(-1)
        if not torch.allclose(grads[0], (torch.diag(p) - torch.outer(p, p)) @ w, atol=1e-5):
            return "the value is right but the gradient is not softmax's: add softmax(logits) minus its detached copy"
        return None

    return check_function(answer, "straight_through_row", cases, problem)


def check_regime_difference(table: Any, answer: Any, a: str = "joint_rl", b: str = "separate",
                            metric: str = "heldout") -> Feedback:
    """``a``'s ``metric`` minus ``b``'s, read off the results table (half a point of slack)."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    expected = float(table.loc[a, metric] - table.loc[b, metric])
    got = as_number(answer)
    if got is None:
        return Feedback(False, f"the difference should be one number, got {answer!r}")
    if abs(got - 100 * expected) <= 0.5 and abs(expected) > 0.005:
        return Feedback(False, "give the difference as a fraction (e.g. -0.02), not in points")
    if abs(got + expected) <= 0.005 and abs(expected) > 0.005:
        return Feedback(False, f"that is {b} minus {a}; the question asks for {a} minus {b}")
    if abs(got - expected) <= 0.005:
        se = float((table.loc[a, f"{metric}_se"] ** 2 + table.loc[b, f"{metric}_se"] ** 2) ** 0.5)
        ratio = abs(expected) / se if se else float("inf")
        return Feedback(True, f"{a} − {b} = {expected:+.3f}, {ratio:.1f} standard errors of the difference: "
                              + ("a real difference" if ratio >= 2 else "within the noise"))
    return Feedback(False, f"{got:.3f} is off: subtract the {metric} column's {b} row from its {a} row")
