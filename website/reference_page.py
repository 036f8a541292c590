"""The website's "Reference numbers" page: data/reference/<profile>.json against the last run.

It shows the table ``llmimg reproduce --check`` prints (name, reference, tolerance, got,
within, then a one-line verdict), read straight from the JSON files rather than through
the library, so the site does not depend on llmimg's internals:

* ``data/reference/<profile>.json``: ``{"profile", "tolerance" (how tolerances were set),
  "numbers": [{"name", "value", "tolerance", "se" and "n" (where recorded), "notebook"}],
  "unchecked": [...]}``;
* ``build/results.json`` (the last run, if any): ``{profile: {name: {"value", ...}}}``.

A number is within when ``|got - reference| <= tolerance`` (plus 1e-9 for the reference's
rounding to 6 decimals), as in ``llmimg.results.Check.ok``.
"""

from __future__ import annotations

import json
from pathlib import Path

SLACK = 1e-9


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(root: Path, profile: str = "default") -> str:
    """The page as MyST Markdown, for the checkout at ``root``."""
    reference = json.loads((root / "data" / "reference" / f"{profile}.json").read_text(encoding="utf-8"))
    results_file = root / "build" / "results.json"
    run = None
    if results_file.is_file():
        run = json.loads(results_file.read_text(encoding="utf-8")).get(profile, {})

    notebooks = sorted({e.get("notebook", "") for e in reference["numbers"]} - {""})
    lines = [
        "# Reference numbers",
        "",
        f"The headline numbers the notebooks ({', '.join(notebooks)}) record at the `{profile}` profile, as "
        "`llmimg reproduce --check` compares them: the reference in "
        f"`data/reference/{profile}.json`, its tolerance, and what the last run recorded in "
        "`build/results.json`. The README's \"Checking the numbers\" says how they are made.",
        "",
        f"Tolerances: {reference.get('tolerance', 'not stated')}.",
        "",
    ]
    if run is None:
        lines += ["No run was recorded where this site was built (`build/results.json` is absent), so the "
                  "tables show the references alone. `llmimg reproduce --check` runs the notebooks and "
                  "fills in the last two columns; `make site` after it puts them here.", ""]

    rows: dict[str, list[str]] = {}
    bad = []
    for entry in reference["numbers"]:
        name, notebook = entry["name"], entry.get("notebook", "")
        value, tol = float(entry["value"]), float(entry["tolerance"])
        if run is None:
            got, within = "not run", ""
        else:
            measured = run.get(name, {}).get("value")
            ok = measured is not None and abs(measured - value) <= tol + SLACK
            got = "missing" if measured is None else f"{measured:.4f}"
            within = "yes" if ok else "**NO**"
            if not ok:
                bad.append(f"{name} ({notebook})" if notebook else name)
        rows.setdefault(notebook, []).append(f"| `{_cell(name)}` | {value:.4f} | {tol:.4f} | {got} | {within} |")

    total = len(reference["numbers"])
    if run is None:
        lines.append(f"{total} reference numbers; no run to compare them with.")
    elif bad:
        lines.append(f"**{len(bad)} of {total} numbers drifted or are missing:** {', '.join(bad)}")
    else:
        lines.append(f"**All {total} numbers within tolerance.**")
    unchecked = [u.get("name", u) if isinstance(u, dict) else u for u in reference.get("unchecked") or []]
    if unchecked:
        lines += ["", "Recorded but not checked (no tolerance could be set): "
                  + ", ".join(f"`{_cell(str(u))}`" for u in unchecked) + "."]
    # One table per notebook, in course order; [](target) is the target page's own title.
    for notebook in sorted(rows):
        lines += ["", f"## {notebook or 'Other numbers'}", ""]
        if notebook:
            lines += [f"Recorded by [](notebooks/{notebook}.ipynb).", ""]
        lines += ["| name | reference | tolerance | got | within |", "|---|--:|--:|--:|---|", *rows[notebook]]
    return "\n".join(lines) + "\n"
