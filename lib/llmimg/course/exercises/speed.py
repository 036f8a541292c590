"""Checks for notebook 08 (speed): counting FLOPs, model FLOP utilisation, where the bottleneck moves, and the
tokens the grammar forces."""

from __future__ import annotations

from typing import Any

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, check_function, check_number, is_unanswered

__all__ = ["check_amdahl", "check_conv_flops", "check_count_forced", "check_llm_share", "check_mfu"]

# Prompts and descriptions that follow them, with their forced tokens checked by hand (<eos> counted):
# "a red circle in the top left" leaves only the size open; "a square" leaves size, colour and both cell words.
FORCED_CASES = [("a red circle in the top left", "a large red circle in the top left"),
                ("a square", "a large yellow square in the middle left"),
                ("a diamond and a small semicircle",
                 "a small green diamond in the center and a small blue semicircle in the bottom right"),
                ("a blue cross in the bottom left and a square in the top middle",
                 "a large blue cross in the bottom left and a small red square in the top middle")]


def check_conv_flops(answer: Any) -> Feedback:
    """Does the learner's ``conv_flops(c_in, c_out, k, h, w)`` count a Conv2d's FLOPs as torch's counter does?

    The layer is ``nn.Conv2d(c_in, c_out, k, padding=k // 2)`` (stride 1, odd ``k``, so the
    output is ``h × w``) on one image; the expected count comes from ``FlopCounterMode``
    on the real layer, not from a formula.
    """
    import torch

    from llmimg.speed.profiling import count_flops

    shapes = [(3, 8, 3, 16, 16), (16, 32, 1, 8, 8), (4, 4, 5, 10, 6)]

    def counted(c_in: int, c_out: int, k: int, h: int, w: int) -> int:
        layer = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2)
        with torch.no_grad():
            return count_flops(lambda: layer(torch.zeros(1, c_in, h, w)))[0]

    cases = [(shape, counted(*shape)) for shape in shapes]

    def problem(result: Any, expected: int, args: tuple) -> str | None:
        try:
            got = float(result)
        except (TypeError, ValueError):
            return f"conv_flops{args} should return a number, got {result!r}"
        if got == expected:
            return None
        c_in, c_out, k, h, w = args
        if got * 2 == expected:
            return f"conv_flops{args} = {got:.0f} counts multiply-adds; a multiply-add is 2 operations"
        if got == expected / (k * k) and k > 1:
            return f"conv_flops{args} = {got:.0f}: every output sums over a k × k window of every input channel"
        return f"conv_flops{args} returned {got:.0f}, the counter says {expected}"

    return check_function(answer, "conv_flops", cases, problem)


def check_mfu(flops: float, seconds: float, peak_gflops: float, answer: Any) -> Feedback:
    """Model FLOP utilisation of a step that does ``flops`` in ``seconds`` on a machine of ``peak_gflops``."""
    if flops <= 0 or seconds <= 0 or peak_gflops <= 0:
        raise ValueError("flops, seconds and peak_gflops must be positive")
    expected = flops / seconds / (peak_gflops * 1e9)
    if not is_unanswered(answer):
        try:
            if abs(float(answer) - 100 * expected) <= 1e-3 * 100 * expected:
                return Feedback(False, "give the share as a fraction (e.g. 0.25), not in per cent")
        except (TypeError, ValueError):
            pass
    return check_number(answer, expected, rtol=1e-2, what="the MFU",
                        hint="achieved FLOP/s (FLOPs over seconds) divided by the peak in FLOP/s (GFLOP/s × 1e9)")


def check_amdahl(share: float, speedup_of_part: float, answer: Any) -> Feedback:
    """The whole call's speed-up when a part taking ``share`` of its time gets ``speedup_of_part`` times faster."""
    if not 0 < share <= 1 or speedup_of_part <= 0:
        raise ValueError("share must be in (0, 1] and speedup_of_part positive")
    return check_number(answer, 1 / ((1 - share) + share / speedup_of_part), rtol=1e-2,
                        what="the overall speed-up",
                        hint="the part's time shrinks to share / speed-up; the rest, 1 − share, stays as it was")


def check_llm_share(latency: Any, answer: Any) -> Feedback:
    """The LLM stage's share of the whole call's time in ``latency``
    (a :func:`~llmimg.speed.profiling.stage_latency` dict).

    Two points of slack, since the answer is read off a printed table.
    """
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    expected = latency["llm_generate"] / latency["total"]
    try:
        got = float(answer)
    except (TypeError, ValueError):
        return Feedback(False, f"the share should be a number between 0 and 1, got {answer!r}")
    if abs(got - 100 * expected) <= 2:
        return Feedback(False, "give the share as a fraction (e.g. 0.25), not in per cent")
    if abs(got - expected) <= 0.02:
        return Feedback(True, f"the LLM takes {expected:.0%} of the call: after distillation it, not the UNet, "
                              "sets the pace" if expected > 0.5 else f"the LLM takes {expected:.0%} of the call")
    return Feedback(False, f"{got:.3f} is off: divide the llm_generate column by the total of the same row")


def check_count_forced(answer: Any) -> Feedback:
    """Does the learner's ``count_forced(prompt, description)`` count the tokens the automaton forces (``<eos>`` too)?

    The expected counts come from :func:`llmimg.stages.llm.constrained.forced_tokens`.
    """
    from llmimg.stages.llm.constrained import forced_tokens

    cases = [((p, d), forced_tokens(p, d)[0]) for p, d in FORCED_CASES]

    def problem(result: Any, expected: int, args: tuple) -> str | None:
        if isinstance(result, tuple):
            return "return one whole number, the forced tokens, not a tuple"
        if result == expected:
            return None
        hint = (" (did you count <eos>? it is forced once the last object is written)" if result == expected - 1
                else " (count a token as forced when `allowed()` holds one word, before you advance)")
        return f"`count_forced{args}` gave {result}, expected {expected}{hint}"

    return check_function(answer, "count_forced", cases, problem)
