"""Claim 2 (notebook 06): does the LLM stage make generation faster?

ShapesEval against denoising steps and against wall time, with the LLM stage (LLM +
description generator) and without it (prompt generator on raw prompts)
(:func:`speed_experiment`), and the least time each setting needs to reach a quality
(:func:`time_to_quality`).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from llmimg.core.evaluation import cmmd, shapes_eval, standard_error
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


def speed_experiment(llm: llm_stage.ShapesLLM, settings: dict[str, tuple[gen_stage.ShapesGenerator, bool]],
                     samples: Sequence[Any], steps: Sequence[int] = (1, 2, 4, 8, 16, 32), *, seed: int = 0):
    """ShapesEval and wall time per image of each setting at each number of denoising steps: a pandas table.

    ``settings`` maps a name to ``(generator, use_llm)``; with ``use_llm`` the LLM's
    upsampling runs (and is timed) before the generator draws its descriptions. Time
    is the whole batch's wall time, LLM included, divided by the number of prompts.
    """
    import pandas as pd

    prompts = [s.prompt for s in samples]
    real = llm.clip.encode_image(np.stack([s.image for s in samples]))
    rows = []
    for name, (gen, use_llm) in settings.items():
        for n_steps in steps:
            t0 = time.perf_counter()
            texts = llm.upsample(prompts, seed=seed) if use_llm else prompts
            images = gen.generate(texts, num_inference_steps=n_steps, seed=seed, check=False)
            ms = (time.perf_counter() - t0) * 1000 / len(prompts)
            judged = shapes_eval(images, prompts)
            emb = gen.text_encoder.encode_image(images)
            rows.append({"setting": name, "steps": n_steps, "ms_per_image": ms, "n": len(prompts),
                         "all_correct": judged.all_correct,
                         "all_correct_se": standard_error(judged.all_correct, len(prompts)), "cmmd": cmmd(emb, real)})
    return pd.DataFrame(rows)


def time_to_quality(table: Any, target: float) -> dict[str, float | None]:
    """For each setting of a :func:`speed_experiment` table, the least ms per image reaching ``target`` all-correct.

    ``None`` when a setting never reaches it at the steps tried.
    """
    out: dict[str, float | None] = {}
    for name, rows in table.groupby("setting", sort=False):
        ok = rows[rows["all_correct"] >= target]
        out[name] = float(ok["ms_per_image"].min()) if len(ok) else None
    return out


__all__ = ["speed_experiment", "time_to_quality"]
