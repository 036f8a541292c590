"""Checks for notebook 06 (the pipeline): where the time goes, speed-ups, and how sure a score is."""

from __future__ import annotations

from typing import Any

from llmimg.exercises.feedback import Feedback, check_function, check_number

__all__ = ["check_run_pipeline", "check_latency_at_steps", "check_speedup", "check_standard_error"]


def check_latency_at_steps(fixed_ms: float, ms_per_step: float, steps: int, answer: Any) -> Feedback:
    """End-to-end milliseconds at ``steps`` denoising steps, given the fixed cost (CLIP, LLM, post-processing) and a step's cost."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    return check_number(answer, fixed_ms + steps * ms_per_step, what="the end-to-end latency",
                        hint="the stages before and after the loop run once; the UNet runs once per step")


def check_speedup(baseline_s: float, fast_s: float, answer: Any) -> Feedback:
    """How many times faster the fast setting is, given both settings' seconds for the same images."""
    if baseline_s <= 0 or fast_s <= 0:
        raise ValueError("both times must be positive")
    return check_number(answer, baseline_s / fast_s, rtol=1e-2, what="the speed-up",
                        hint="a speed-up is the old time divided by the new time (not the difference)")


def check_standard_error(rate: float, n: int, answer: Any) -> Feedback:
    """Standard error of an all-correct rate measured on ``n`` independent prompts."""
    if not 0 <= rate <= 1 or n <= 0:
        raise ValueError("rate must be in [0, 1] and n positive")
    from llmimg.evaluation import standard_error

    return check_number(answer, standard_error(rate, n), rtol=1e-2, what="the standard error",
                        hint="each prompt is a coin flip that comes up 'all correct' with probability p: "
                             "the mean of n flips has variance p(1 − p)/n")


def check_run_pipeline(answer: Any) -> Feedback:
    """Does the learner's ``run_pipeline(prompt, encode, write, draw, use_llm)`` chain the three stages?

    ``encode(prompt)`` gives CLIP's embedding, ``write(z, prompt)`` the LLM's description,
    ``draw(text)`` the image; without the LLM the generator draws the prompt itself. The
    stages are stand-ins that record how they were called.
    """
    calls: list[str] = []

    def encode(prompt: str) -> str:
        calls.append("encode")
        return f"z({prompt})"

    def write(z: str, prompt: str) -> str:
        calls.append("write")
        return f"description of {prompt} from {z}"

    def draw(text: str) -> str:
        calls.append("draw")
        return f"image of [{text}]"

    prompts = ["a red circle", "a square in the top left"]
    cases = [((p, encode, write, draw, use_llm), use_llm) for p in prompts for use_llm in (True, False)]

    def problem(result: Any, use_llm: bool, args: tuple) -> str | None:
        prompt = args[0]
        made, calls[:] = list(calls), []
        expected = f"image of [description of {prompt} from z({prompt})]" if use_llm else f"image of [{prompt}]"
        if result == expected:
            return None
        where = "with" if use_llm else "without"
        if made[-1:] != ["draw"]:
            return f"{where} the LLM the last stage should be `draw`; your calls were {made}"
        return f"{where} the LLM you returned {result!r}, expected {expected!r} (stages called: {made})"

    calls.clear()
    return check_function(answer, "run_pipeline", cases, problem)
