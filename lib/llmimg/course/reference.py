"""Headline numbers: what a notebook run records, and the references it is checked against.

A silent drift in a notebook (a number that moves while nothing crashes) is what this
module catches:

* a notebook calls :func:`record` with the numbers it computed; they land in the run's
  ``build/results.json``, under the profile;
* ``data/reference/<profile>.json`` holds each headline number of a committed run with a
  tolerance that comes from measurement (:func:`tolerance`), and the notebook printing it;
* :func:`check` compares the two; ``llmimg reproduce --check`` prints :func:`format_table`
  and exits non-zero naming what drifted;
* :func:`write_reference` turns a run's results (and, where measured, the spread over
  training seeds recorded by ``llmimg experiment seed-spread``) into a reference file.

Nothing is recorded outside a source checkout (on Colab, say): there is no run to check.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmimg.core.config import Profile, current_notebook, get_profile, project_root
from llmimg.core.store import atomic_write

__all__ = ["STAGES", "Check", "check", "eval_n", "format_table", "headline", "load_reference", "load_results", "record",
           "reference_path", "results_path", "tolerance", "verdict", "write_reference"]

SIGMAS = 3.0  # a reference holds the value ± this many standard deviations of a run-to-run difference
STAGES = ("clip", "llm", "generator")  # the stages whose evaluations notebooks 03-05 record


def _stage(stage: str) -> Any:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from: {', '.join(STAGES)}")
    return importlib.import_module(f"llmimg.stages.{stage}")


def eval_n(stage: str, profile: str | Profile | None = None) -> int:
    """How many examples a stage's headline numbers are measured on (the sizes table's ``<stage>.eval_n``)."""
    _stage(stage)
    return get_profile(profile).size(f"{stage}.eval_n")


def headline(stage: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers (the stage's ``HEADLINE``) of its evaluation ``metrics``, with their ``_se`` where given.

    All are rates, so their sampling error follows from their n (:func:`tolerance`);
    ``llmimg experiment seed-spread`` measures their spread over training seeds.
    """
    out = {}
    for key in _stage(stage).HEADLINE:
        out[key] = metrics[key]
        if f"{key}_se" in metrics:
            out[f"{key}_se"] = metrics[f"{key}_se"]
    return out


def results_path(root: Path) -> Path:
    """The run's recorded numbers: ``build/results.json`` under ``root``."""
    return Path(root) / "build" / "results.json"


def reference_path(root: Path, profile: str | Profile | None = None) -> Path:
    """The reference numbers of ``profile``: ``data/reference/<profile>.json`` under ``root``."""
    return Path(root) / "data" / "reference" / f"{get_profile(profile).name}.json"


def _read_json(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not valid JSON ({exc}); {fix}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _results_fix(profile: str) -> str:
    return f"delete build/results.json and run `llmimg reproduce --profile {profile}` again"


def _all_results(root: Path, profile: str) -> dict[str, Any]:
    """Everything in ``build/results.json`` (empty if there is none), checked to be what :func:`record` writes."""
    path = results_path(root)
    if not path.is_file():
        return {}
    fix = _results_fix(profile)
    data = _read_json(path, fix)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"build/results.json does not map profiles to recorded numbers; {fix}")
    for prof, entries in data.items():
        for name, entry in entries.items():
            if not (isinstance(entry, dict) and _is_number(entry.get("value"))
                    and all(entry.get(k) is None or _is_number(entry[k]) for k in ("se", "n"))):
                raise ValueError(f"build/results.json: {prof}/{name} is not a recorded number (a value, its se and "
                                 f"n); {fix}")
    return data


def load_results(root: Path, profile: str | Profile | None = None) -> dict[str, dict[str, Any]]:
    """The numbers recorded for ``profile`` in ``build/results.json`` (empty if none); damage is a ValueError."""
    name = get_profile(profile).name
    return _all_results(root, name).get(name, {})


def record(values: Mapping[str, float], *, profile: str | Profile | None = None, prefix: str = "",
           n: int | None = None, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Record a notebook's headline numbers in the run's ``build/results.json``; return the entries written.

    ``values`` maps names to numbers; a ``<name>_se`` key beside ``<name>`` is kept as
    that number's standard error rather than as a number of its own, and ``n`` (the
    number of trials behind a rate) lets :func:`tolerance` compute one. Names are stored
    as ``prefix + name`` (e.g. ``"llm."``). NaN (not measurable in this run) is left out;
    non-numeric values are refused. Outside a
    source checkout nothing is written (and the entries are still returned).
    """
    profile = get_profile(profile)
    notebook = current_notebook()
    entries: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if name.endswith("_se") and name[:-3] in values:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"record() takes numbers; {name!r} is {value!r}")
        if not math.isfinite(value):  # not measurable in this run (e.g. no two-object prompt at smoke)
            continue
        entry: dict[str, Any] = {"value": float(value)}
        se = values.get(f"{name}_se")
        if se is not None and math.isfinite(se):
            entry["se"] = float(se)
        if n is not None:
            entry["n"] = int(n)
        if notebook:
            entry["notebook"] = notebook
        entries[prefix + name] = entry
    root = root if root is not None else project_root()
    if root is None:
        return entries
    path = results_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    everything = _all_results(root, profile.name)
    everything.setdefault(profile.name, {}).update(entries)
    with atomic_write(path, "w") as f:
        json.dump(everything, f, indent=1, sort_keys=True)
    return entries


def tolerance(entry: Mapping[str, Any], seed_values: Sequence[float] | None = None) -> float | None:
    """How far a rerun may land from ``entry``'s value: ``SIGMAS`` standard deviations of a difference.

    Two sources of spread are measured: the evaluation's sampling error (the recorded
    ``se``, or for a rate with its ``n`` the binomial one, counted as if at least one
    trial went the other way so that a rate of 1.000 still has a spread), and, where
    ``seed_values`` holds the number from models trained with different seeds, their
    standard deviation. A difference of two runs has √2 times either spread; the larger
    is used. None when nothing measures the number's spread.
    """
    sds = []
    if entry.get("se") is not None:
        sds.append(float(entry["se"]))
    if entry.get("n") and 0.0 <= entry["value"] <= 1.0:
        from llmimg.core.evaluation import standard_error

        n = int(entry["n"])
        sds.append(standard_error(min(max(entry["value"], 1.0 / n), 1.0 - 1.0 / n), n))
    if seed_values is not None and len(seed_values) >= 2:
        sds.append(statistics.stdev(seed_values))
    if not sds:
        return None
    return float(f"{SIGMAS * math.sqrt(2.0) * max(sds):.3g}")


def write_reference(root: Path, profile: str | Profile | None = None,
                    seed_spread: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Write ``data/reference/<profile>.json`` from the run's recorded numbers; return it.

    Each number whose spread is measured (:func:`tolerance`) becomes a reference, with
    the evaluation's standard error ``"se"`` and its number of trials ``"n"`` where the
    run recorded them, so that the sampling error stands beside the tolerance; the
    others are listed under ``"unchecked"`` so that nothing is dropped silently. The
    references of notebooks that recorded nothing in this checkout's runs (``--only``
    ran others) are kept as they were: writing the reference replaces what was run, no more.
    """
    profile = get_profile(profile)
    results = load_results(root, profile)
    if not results:
        raise FileNotFoundError(f"no numbers recorded for profile {profile.name!r} in build/results.json: "
                                f"run `llmimg reproduce --profile {profile.name}` first")
    ran = {entry.get("notebook", "") for entry in results.values()}
    path = reference_path(root, profile)
    try:
        before = load_reference(root, profile) if path.is_file() else {}
    except ValueError:
        raise ValueError(f"data/reference/{path.name} is damaged, and writing the reference keeps what it holds for "
                         f"the notebooks not run: restore it with `git checkout -- data/reference/{path.name}`, or "
                         f"delete it to write the reference from this run alone") from None
    numbers = [n for n in before.get("numbers", []) if n.get("notebook", "") not in ran]
    unchecked = [name for name in before.get("unchecked", []) if name not in results]
    for name, entry in sorted(results.items()):
        tol = tolerance(entry, (seed_spread or {}).get(name))
        if tol is None:
            unchecked.append(name)
            continue
        number = {"name": name, "value": round(entry["value"], 6), "tolerance": tol}
        if entry.get("se") is not None:
            number["se"] = round(float(entry["se"]), 6)
        if entry.get("n") is not None:
            number["n"] = int(entry["n"])
        number["notebook"] = entry.get("notebook", "")
        numbers.append(number)
    numbers.sort(key=lambda n: n["name"])
    reference = {
        "profile": profile.name,
        "tolerance": f"{SIGMAS:g} standard deviations of the difference of two runs: the larger of the "
                     "evaluation's sampling error and the spread over training seeds "
                     "(llmimg.course.reference.tolerance)",
        "numbers": numbers,
        "unchecked": unchecked,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    return reference


def load_reference(root: Path, profile: str | Profile | None = None) -> dict[str, Any]:
    """The reference file of ``profile``, checked for its shape; a clear error if there is none or it is damaged."""
    path = reference_path(root, profile)
    name = get_profile(profile).name
    if not path.is_file():
        raise FileNotFoundError(f"no reference numbers for profile {name!r} "
                                f"(data/reference/{path.name} is missing)")
    fix = (f"restore it with `git checkout -- data/reference/{path.name}` or write it again with "
           f"`llmimg reproduce --profile {name} --write-reference`")
    reference = _read_json(path, fix)
    numbers = reference.get("numbers") if isinstance(reference, dict) else None
    if not isinstance(numbers, list):
        raise ValueError(f"data/reference/{path.name} has no list of numbers; {fix}")
    for k, ref in enumerate(numbers):
        if not (isinstance(ref, dict) and isinstance(ref.get("name"), str) and _is_number(ref.get("value"))
                and _is_number(ref.get("tolerance")) and isinstance(ref.get("notebook", ""), str)
                and all(ref.get(key) is None or _is_number(ref[key]) for key in ("se", "n"))):
            raise ValueError(f"data/reference/{path.name}: number {k + 1} is not a name, a value, a tolerance and a "
                             f"notebook (with its se and n where known); {fix}")
    return reference


@dataclass(frozen=True)
class Check:
    """One reference number against the run: ``got`` is None when the run did not record it."""

    name: str
    notebook: str
    reference: float
    tolerance: float
    got: float | None

    @property
    def ok(self) -> bool:
        # The small slack absorbs the rounding of reference values to 6 decimals.
        return self.got is not None and abs(self.got - self.reference) <= self.tolerance + 1e-9


def check(root: Path, profile: str | Profile | None = None, notebooks: Sequence[str] | None = None) -> list[Check]:
    """Compare the run's ``build/results.json`` with the profile's references.

    ``notebooks`` (stems, e.g. ``["03_clip"]``) keeps the references those notebooks
    print: what a run of only some notebooks can be checked against.
    """
    reference = load_reference(root, profile)
    results = load_results(root, profile)
    rows = []
    for ref in reference["numbers"]:
        if notebooks is not None and ref.get("notebook") not in notebooks:
            continue
        got = results.get(ref["name"], {}).get("value")
        rows.append(Check(ref["name"], ref.get("notebook", ""), float(ref["value"]), float(ref["tolerance"]), got))
    return rows


def format_table(rows: Sequence[Check]) -> str:
    """The check as a plain-text table, then a one-line verdict naming what drifted."""
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'name':{width}s}  {'reference':>10s}  {'tolerance':>9s}  {'got':>10s}  within"]
    for r in rows:
        got = "missing" if r.got is None else f"{r.got:.4f}"
        lines.append(f"{r.name:{width}s}  {r.reference:10.4f}  {r.tolerance:9.4f}  {got:>10s}  "
                     f"{'yes' if r.ok else 'NO'}")
    return "\n".join([*lines, verdict(rows)])


def verdict(rows: Sequence[Check]) -> str:
    """One line: all numbers within tolerance, or which drifted or are missing."""
    bad = [r for r in rows if not r.ok]
    if not rows:
        return "no reference numbers apply to the notebooks run"
    if bad:
        names = ", ".join(f"{r.name} ({r.notebook})" if r.notebook else r.name for r in bad)
        return f"{len(bad)} of {len(rows)} numbers drifted or are missing: {names}"
    return f"all {len(rows)} numbers within tolerance"
