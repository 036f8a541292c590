"""Where the course ends up: one line per experiment, read from the committed experiment records.

Notebook 00 shows this table before any model is trained. Every number comes from a record
that an ``llmimg`` command wrote (``data/experiments`` in a checkout; the README names the
command of each), never typed in; a record that is not there is left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from llmimg.core.config import experiments_dir


def _rate(r: dict[str, Any], n: str = "n_prompts") -> str:
    return f"{r['rate']:.3f} ± {r['se']:.3f} ({r[n]} prompts)"


def _points(d: dict[str, Any]) -> str:
    return f"{100 * d['diff']:+.1f} ± {100 * d['se']:.1f} points, paired: {d['verdict']}"


def _geneval_pipeline(r: dict[str, Any]) -> list[tuple[str, str]]:
    val, heldout = r["val"], r["heldout"]
    rows = [("GenEval-shaped world: the pipeline, LLM on, `val` prompts, overall", _rate(val["llm_on"]["overall"])),
            ("… counting (the hardest category)", _rate(val["llm_on"]["categories"]["counting"])),
            ("… held-out compositions, overall", _rate(heldout["llm_on"]["overall"]))]
    if "prompt_trained" in val:
        rows += [("… no LLM: a generator trained on prompts, `val`, overall", _rate(val["prompt_trained"]["overall"])),
                 ("… LLM on minus no LLM, `val`, overall", _points(val["paired_prompt_trained"]["overall"]))]
    planner = val["planner_faithful"]["all"]
    rows.append(("… the LLM's layouts keep everything the prompt asks (with its checker)",
                 f"{planner['rate']:.3f} ± {planner['se']:.3f} ({planner['n']} descriptions)"))
    return rows


def _geneval_recipes(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"GenEval-shaped world: the default generator against '{name}', `val`, overall",
             _points(rows["overall"])) for name, rows in r["paired"].items()]


def _generator_recipes(r: dict[str, Any]) -> list[tuple[str, str]]:
    two = r["recipes"]["default"]["two_objects"]
    return [("Today's world: the generator on two-object descriptions, all correct",
             f"{two['all_correct']:.3f} ± {two['all_correct_se']:.3f} ({two['n']} scenes)")]


def _clip_binding(r: dict[str, Any]) -> list[tuple[str, str]]:
    # the record names its arms; the course's own is marked "(default)" (course does not import research)
    default, other = sorted(r["summary"], key=lambda arm: not arm.endswith("(default)"))
    with_, without = r["summary"][default]["binding_val"], r["summary"][other]["binding_val"]
    ahead = sum(row["verdict"] == f"{default} ahead" for row in r["paired"])
    return [(f"GenEval-shaped world: CLIP binding, with / without hard negatives ({len(r['paired'])} training seeds)",
             f"{with_['mean']:.3f} ± {with_['seed_sd']:.3f} / {without['mean']:.3f} ± {without['seed_sd']:.3f} "
             f"(mean ± sd over seeds, {r['n']} images, chance 0.5); with ahead at {ahead} of {len(r['paired'])} "
             "seeds, paired")]


def _transfer(r: dict[str, Any]) -> list[tuple[str, str]]:
    # the record names its encoders: each paired row's "a" is the LLM's, its "b" the encoder compared with it
    last, mine = r["steps"][-1], r["paired"][0]["a"]
    final = [row for row in r["paired"] if row["step"] == last]
    rows = []
    for other in dict.fromkeys(row["b"] for row in final):
        a, b = r["summary"][mine]["mean_attribute"], r["summary"][other]["mean_attribute"]
        ahead = sum(row["verdict"] == f"{mine} ahead" for row in final if row["b"] == other)
        rows.append((f"Today's world: a generator on the LLM's states / on the {other!r} encoder, mean attribute "
                     f"accuracy at step {last} ({len(r['seeds'])} training seeds)",
                     f"{a['mean']:.3f} ± {a['seed_sd']:.3f} / {b['mean']:.3f} ± {b['seed_sd']:.3f} (mean ± sd over "
                     f"seeds, {r['n']} images); the LLM's ahead at {ahead} of {len(r['seeds'])} seeds, paired"))
    return rows


# record file -> how to read its headline lines
RECORDS: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "geneval-pipeline-default.json": _geneval_pipeline,
    "geneval-generator-recipes-default.json": _geneval_recipes,
    "clip-binding-default.json": _clip_binding,
    "generator-recipes-default.json": _generator_recipes,
    "transfer-default.json": _transfer,
}


SAMPLES = "geneval-pipeline-default.png"  # written by `llmimg eval pipeline --world geneval --samples FILE`


def samples_figure(folder: str | Path | None = None) -> Path | None:
    """The committed figure of the trained GenEval-world pipeline's images (None where there is none)."""
    path = (Path(folder) if folder is not None else experiments_dir()) / SAMPLES
    return path if path.is_file() else None


def course_results(folder: str | Path | None = None) -> pd.DataFrame:
    """One row per headline result of the committed ``default`` records: ``experiment``, ``result``, ``record``.

    ``folder`` defaults to :func:`~llmimg.core.config.experiments_dir`. Records that are not
    there (an installed package has none) are skipped; a damaged one raises ``ValueError``
    naming it.
    """
    folder = Path(folder) if folder is not None else experiments_dir()
    rows = []
    for name, read in RECORDS.items():
        path = folder / name
        if not path.is_file():
            continue
        try:
            lines = read(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{name!r} in the experiment records is damaged ({err!r}); restore it with git "
                             "or rerun the command the README names for it") from err
        rows += [(what, result, name) for what, result in lines]
    return pd.DataFrame(rows, columns=["experiment", "result", "record"])


__all__ = ["RECORDS", "SAMPLES", "course_results", "samples_figure"]
