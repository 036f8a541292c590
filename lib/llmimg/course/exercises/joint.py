"""Checks for notebook 07 (joint training): the joint loss of a batch, REINFORCE's loss, reading the results."""

from __future__ import annotations

from typing import Any

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, as_number, check_function, is_unanswered

__all__ = ["check_joint_loss", "check_reinforce_loss", "check_regime_difference"]

NO_GRADIENT = ("{name} returns a value no gradient flows through ({why}): keep it a tensor built from the "
               "inputs (no float(), .item() or .detach()), or the optimiser would train nothing")


def _gradients(loss: Any, inputs: list[Any]) -> list[Any] | None:
    """d loss / d inputs (zeros where it does not depend on one), or None if no gradient flows through ``loss``."""
    import torch

    if not (torch.is_tensor(loss) and loss.requires_grad):
        return None
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def check_joint_loss(answer: Any, model: Any, batch: dict[str, Any]) -> Feedback:
    """Does the learner's ``joint_loss(model, batch, lam)`` give L_diff + λ · L_LM of the batch, gradients included?

    ``model`` is a :class:`~llmimg.research.joint.JointModel` and ``batch`` one of its batches; the
    model is put in eval mode (no dropout) so that every call gives the same numbers. Past the
    value, the loss's gradient on a weight of the UNet and one of the LLM's prefix mapper must
    be the right loss's: a value computed with ``float`` or under ``no_grad`` trains nothing.
    """
    import torch

    model.eval()
    with torch.no_grad():
        diffusion = float(model.denoising(batch)[0])
        lm = float(model.lm(batch["z"], batch["task"], batch["input_ids"], batch["attention_mask"],
                            batch.get("context")))
    cases = [((model, batch, lam), diffusion + lam * lm) for lam in (0.5, 2.0, 0.0)]

    def problem(result: Any, expected: float, args: tuple) -> str | None:
        lam = args[2]
        with torch.no_grad():
            got = as_number(result)
        if got is None:
            return f"joint_loss should return a number (a scalar tensor), got {type(result).__name__}"
        close = lambda a, b: abs(a - b) <= 1e-4 * max(1.0, abs(b))  # noqa: E731
        if close(got, expected):
            probes = [next(model.unet.parameters()), next(model.lm.mapper.parameters())]
            right = model.denoising(batch)[0] + lam * model.lm(batch["z"], batch["task"], batch["input_ids"],
                                                                batch["attention_mask"], batch.get("context"))
            grads = _gradients(answer(model, batch, lam), probes)
            if grads is None:
                return NO_GRADIENT.format(name="joint_loss", why="a plain number, or a tensor cut from the graph")
            if not all(torch.allclose(g, e, rtol=1e-4, atol=1e-7) for g, e in zip(grads, _gradients(right, probes))):
                return ("the value is right but its gradient is not: a term was computed outside autograd (a float, "
                        ".item() or .detach()), so that model would not learn from it")
            return None
        if close(got, diffusion) and lam:
            return "the LLM's term is missing: add λ times model.lm(...) of the batch's LLM rows"
        if close(got, diffusion + lm):
            return f"λ = {lam} is not applied: it multiplies the LLM's loss"
        if close(got, lm + lam * diffusion):
            return "λ weighs the LLM's term, not the diffusion term"
        return f"joint_loss(model, batch, {lam}) = {got:.4f}, expected {expected:.4f}"

    return check_function(answer, "joint_loss", cases, problem)


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


def check_regime_difference(table: Any, answer: Any, a: str = "joint", b: str = "separate",
                            metric: str = "all_correct") -> Feedback:
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
