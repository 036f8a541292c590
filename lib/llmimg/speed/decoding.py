"""How fast the LLM writes a description: the sampler with its checker against constrained decoding.

Three ways to write the descriptions of one batch of prompts, timed side by side:

* ``checker``: what the pipeline does by default, transformers' ``generate`` sampling
  every token, then drawing again the rows the checker rejects (up to 16 draws);
* ``masked``: constrained decoding (:mod:`~llmimg.stages.llm.constrained`), one forward
  pass per token, forced ones included;
* ``jump_forward``: constrained decoding that reads each run of forced tokens in the pass
  of the choice before it.

:func:`write_and_count` writes once and counts GPT-2's forward passes with a hook (so the
three are counted the same way); :func:`decoding_costs` adds timing, in interleaved
trials, so that a slow moment of a shared machine falls on every mode alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmimg.core.data import describe_in_prompt_order, parse_prompt
from llmimg.core.data.worlds import prompt_followed
from llmimg.core.evaluation.statistics import standard_error
from llmimg.core.text import world_of
from llmimg.stages.llm.constrained import forced_tokens

MODES: tuple[str, ...] = ("checker", "masked", "jump_forward")


def forced_fraction(samples: Sequence[Any]) -> dict[str, float]:
    """The share of tokens the automaton forces in real descriptions (``<eos>`` counted), given their prompts.

    ``samples``: ShapesWorld samples; each description is written in its prompt's order,
    as the upsampler writes it.
    """
    counts = np.array([forced_tokens(s.prompt, describe_in_prompt_order(s.scene, parse_prompt(s.prompt)))
                       for s in samples])
    return {"forced": int(counts[:, 0].sum()), "tokens": int(counts[:, 1].sum()),
            "fraction": float(counts[:, 0].sum() / counts[:, 1].sum()), "n_descriptions": len(samples)}


def write(llm: Any, prompts: list[str], mode: str, seed: int = 0) -> list[str]:
    """The descriptions ``llm`` writes for ``prompts`` in ``mode`` (one of :data:`MODES`), each from its own seed."""
    if mode not in MODES:
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "checker":
        return llm.upsample(prompts, seed=seed)
    return llm.upsample(prompts, seed=seed, constrained=True, jump_forward=mode == "jump_forward")


def write_and_count(llm: Any, prompts: Sequence[str], mode: str, seed: int = 0) -> dict[str, Any]:
    """One untimed run of ``mode``: the ``descriptions``, GPT-2's forward ``passes``, and the share of descriptions
    that follow their prompts (``follows_prompt``, its standard error and ``n``), by the LLM's world's checker."""
    prompts = list(prompts)
    calls = [0]
    hook = llm.lm.gpt2.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        descriptions = write(llm, prompts, mode, seed)
    finally:
        hook.remove()
    world = world_of(llm.tokenizer)
    rate = float(np.mean([prompt_followed(world, p, d) for p, d in zip(prompts, descriptions)]))
    return {"descriptions": descriptions, "passes": calls[0], "follows_prompt": rate,
            "follows_prompt_se": standard_error(rate, len(prompts)), "n": len(prompts)}


def decoding_costs(llm: Any, prompts: Sequence[str], *, repeats: int = 5, seed: int = 0,
                   modes: Sequence[str] = MODES) -> dict[str, dict[str, Any]]:
    """Per mode: milliseconds for the batch ``prompts`` (median, min, max over ``repeats`` interleaved trials),
    GPT-2 forward passes, and the share of descriptions that follow their prompts (with n and standard error).

    Either world's LLM: a description follows its prompt by that world's checker.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown decoding mode(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MODES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    prompts = list(prompts)
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:  # one untimed run each: warm-up, and the passes and the share to report
        row = write_and_count(llm, prompts, mode, seed)
        del row["descriptions"]
        out[mode] = {**row, "ms": []}
    for _ in range(repeats):
        for mode in modes:
            start = time.perf_counter()
            write(llm, prompts, mode, seed)
            out[mode]["ms"].append(1000 * (time.perf_counter() - start))
    for row in out.values():
        ms = row.pop("ms")
        row.update(ms_median=float(np.median(ms)), ms_min=float(min(ms)), ms_max=float(max(ms)),
                   ms_per_pass=float(np.median(ms)) / max(row["passes"], 1))
    return out


__all__ = ["MODES", "decoding_costs", "forced_fraction", "write", "write_and_count"]
