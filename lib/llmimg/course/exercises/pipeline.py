"""Checks for notebook 06 (the pipeline): where the time goes, speed-ups, and how sure a score is."""

from __future__ import annotations

from typing import Any

from llmimg.course.exercises.feedback import NO_ANSWER, Feedback, check_function, check_number, is_unanswered

__all__ = ["check_run_pipeline", "check_latency_at_steps", "check_speedup", "check_standard_error",
           "check_upsampling_gains", "check_why_prompt_generator_gains_little"]


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
    from llmimg.core.evaluation import standard_error

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


def check_upsampling_gains(table: Any, answer: Any) -> Feedback:
    """What upsampling adds to each generator of notebook 06's section 4, in points of GenEval's overall score.

    ``table`` is the first value :func:`llmimg.research.upsampling.upsampling_experiment` returns;
    ``answer`` a dict from "trained on" (``"descriptions"``, ``"prompts"``) to the overall
    score drawn from the LLM's description minus drawn from the raw prompt, ×100. Half a
    point of slack.
    """
    cells = table.set_index(["trained on", "drawn from"])["overall"]
    expected = {kind: 100 * (cells[(kind, "LLM description")] - cells[(kind, "raw prompt")])
                for kind in table["trained on"].unique()}
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return Feedback(False, f"answer with a dict whose keys are {sorted(expected)}, one gain in points each")
    wrong = []
    for kind, value in expected.items():
        try:
            got = float(answer[kind])
        except (TypeError, ValueError):
            return Feedback(False, f"the gain of {kind!r} should be a number, got {answer[kind]!r}")
        if abs(got + value) <= 0.5 and abs(value) > 0.5:
            wrong.append(f"{kind!r}: the sign is flipped (description minus raw prompt, not the reverse)")
        elif abs(100 * got - value) <= 0.5 and abs(value) > 0.5:
            wrong.append(f"{kind!r}: give points (×100), not a fraction")
        elif abs(got - value) > 0.5:
            wrong.append(f"{kind!r}: {got:+.1f} points is off; read its two rows of the table")
    if wrong:
        return Feedback(False, "; ".join(wrong))
    best = max(expected, key=expected.get)
    return Feedback(True, ", ".join(f"{k} {v:+.1f} points" for k, v in expected.items())
                    + f": upsampling helps the generator trained on {best} most")


WHY_PROMPT_GENERATOR = {
    "a": "it never saw a full description in training, so the words the LLM adds are inputs it was not trained on",
    "b": "the LLM's descriptions are unfaithful to the prompts, so they mislead it",
    "c": "classifier-free guidance cancels the words a description adds to the prompt",
    "d": "it has fewer parameters than the generator trained on descriptions",
}


def check_why_prompt_generator_gains_little(answer: Any) -> Feedback:
    """Multiple choice (a letter of :data:`WHY_PROMPT_GENERATOR`): why handing descriptions to the prompt generator helps little."""
    if is_unanswered(answer):
        return Feedback(False, NO_ANSWER)
    letter = str(answer).strip().lower().strip("()")
    if letter not in WHY_PROMPT_GENERATOR:
        return Feedback(False, f"answer with one letter among {', '.join(WHY_PROMPT_GENERATOR)}")
    if letter == "a":
        return Feedback(True, "it learned p(x | c) from prompts: a description's extra words are out of its "
                              "training distribution, and the stated ones it already draws without them")
    why = {"b": "the same descriptions lift the other generator, and section 4 prints how many keep the prompt",
           "c": "guidance extrapolates from the unconditional prediction towards the conditional one: it "
                "strengthens every word of the text, it cancels none",
           "d": "both generators have the same UNet and training; only their training texts differ"}
    return Feedback(False, why[letter])
