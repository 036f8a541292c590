"""The committed notebooks: lesson frame, outputs from a clean run, nothing machine-specific.

nbval (``make test``) re-runs them at the smoke profile; these tests read the files as
committed, the way a learner opening them on GitHub or Colab sees them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from llmimg import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Absolute paths a run could leak: Unix homes and temp folders, this checkout, Windows users.
MACHINE_PATH = re.compile(r"(/(home|root|Users|tmp|work|private/var)/[\w.\-]+)|([A-Za-z]:\\\\?Users\\\\?)")


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:3] == ["00", "01", "02"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_frame(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    repo = REPO_URL.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}"
    assert badge in first.source, "the first cell needs an 'Open in Colab' badge for this file"
    assert re.search(rf"^# {path.name[:2]} · ", first.source, re.M), "title '# NN · ...' expected"
    assert "What you will learn" in first.source
    setup, params = _code(nb)[:2]
    assert '"google.colab" in sys.modules' in setup.source and "pip install" in setup.source
    assert "parameters" in params.metadata.get("tags", []) and "PROFILE = None" in params.source
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert any("check_" in c.source for c in _code(nb)[-4:]), "end with exercises using check_... helpers"


TEXT_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # tqdm's text bar: "generator:   0%|   | 0/1200 [00:00<?"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_clean_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    assert all(c.execution_count is not None for c in code), "commit the notebook executed (default profile)"
    outputs = [o for c in code for o in c.outputs]
    assert outputs, "commit the notebook with its outputs"
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"error output committed: {errors[0].ename}"
    # Warnings, notes and waits printed by the libraries are noise for a reader: fix them at their source.
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"library stderr committed: {stderr[0][:120]!r}"
    texts = [str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs]
    bars = [t for t in texts if any(w in t for w in ("FloatProgress", "IntProgress")) or TEXT_BAR.search(t)]
    assert not bars, "a progress-bar widget was committed (run with progress bars off, as llmimg reproduce does)"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert "papermill" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_machine_paths_and_small(path):
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    for number, cell in enumerate(nb.cells, start=1):
        texts = [cell.source] + [
            str(v) for o in cell.get("outputs", []) for k, v in {**o.get("data", {}), "text": o.get("text", "")}.items()
            if not k.startswith("image/")
        ]
        for t in texts:
            match = MACHINE_PATH.search(t)
            assert not match, f"cell {number} holds a machine path: {match.group(0)!r}"
    assert len(text) < 3_000_000, f"{path.name} is {len(text) / 1e6:.1f} MB; keep notebooks small"


def test_nbval_has_outputs_to_compare():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        checked = [c for c in _code(nb) if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
        assert checked, f"{path.name}: mark deterministic cells with # NBVAL_CHECK_OUTPUT"
        assert all(c.outputs for c in checked), f"{path.name}: a checked cell has no committed output"


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert path.name in readme, f"README.md does not list {path.name}"


def test_the_course_map_lists_every_notebook():
    welcome = nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    (course_map,) = [c.source for c in welcome.cells if c.source.startswith("## The map of the course")]
    assert re.findall(r"^\| \*\*(\d{2}) · ", course_map, re.M) == [p.name[:2] for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_names_only_notebooks_that_exist(path):
    existing = {int(p.name[:2]) for p in NOTEBOOKS}
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for match in re.finditer(r"\b[Nn]otebooks? (\d{1,2})(?:\s*[–-]\s*(\d{1,2}))?\b", cell.source):
            for number in filter(None, match.groups()):
                assert int(number) in existing, f"{match.group(0)!r} names a notebook that does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_cell_shows_a_figure_twice(path):
    """A helper that shows its figure and also returns it, left as a cell's last expression, shows it twice."""
    nb = nbformat.read(path, as_version=4)
    for number, cell in enumerate(nb.cells, start=1):
        pngs = [o.data["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(pngs) == len(set(pngs)), f"cell {number} shows the same figure twice (end the line with ';')"


# A decimal quoted in prose, outside math ($...$), code (`...`) and exercise questions ("**2.** ...").
PROSE_DECIMAL = re.compile(r"(?<![\w.$^_])(\d+\.\d+)(?![\w.]*\d)")
ANY_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?")
NAMES_WITH_DECIMALS = ("SD 1.5",)  # model names, not measurements


def _numbers_of(nb) -> list[float]:
    """Every number in the notebook's code and text outputs."""
    texts = []
    for cell in _code(nb):
        texts.append(cell.source)
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return [float(s.replace(",", "")) for text in texts for s in ANY_NUMBER.findall(text)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_quotes_only_numbers_its_outputs_show(path):
    """A decimal the prose quotes must be one the notebook computes or sets (rounded as quoted; 0.915 as 91.5 %)."""
    nb = nbformat.read(path, as_version=4)
    values = _numbers_of(nb)
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "markdown" or re.match(r"\s*\*\*\d+\.\*\*", cell.source):
            continue
        prose = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`", " ", cell.source, flags=re.S)
        for name in NAMES_WITH_DECIMALS:
            prose = prose.replace(name, " ")
        for quoted in PROSE_DECIMAL.findall(prose):
            digits, x = len(quoted.split(".")[1]), float(quoted)
            assert any(round(v, digits) == x or round(100 * v, digits) == x for v in values), (
                f"cell {number} quotes {quoted}, which no output or code of the notebook shows: compute the "
                "sentence in code, or update it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_an_exercise_asks_for_code(path):
    """Every lesson has an exercise where the learner writes a function that a check_ helper calls."""
    nb = nbformat.read(path, as_version=4)
    stub = re.compile(r"^def (\w+)\(.*\):\n    \.\.\.$", re.M)
    assert any((m := stub.search(c.source)) and re.search(rf"check_\w+\({m[1]}\)", c.source) for c in _code(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_summary_comes_before_next(path):
    """Every lesson ends with a short summary of what was learnt, and "Next" is its last section."""
    nb = nbformat.read(path, as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    summary = [k for k, h in enumerate(headings) if h.startswith("## Summary")]
    assert summary, "add a '## Summary' section before 'Next'"
    assert headings[-1].startswith(("## Next", "## Summary and what comes next")), "'Next' should be the last section"
    assert summary[-1] >= len(headings) - 3, "the summary belongs at the end, just before the exercises and 'Next'"


# A cell that draws a chart (not an image grid) must name what it shows.
MAKES_A_CHART = re.compile(r"plt\.subplots\(|plt\.figure\(|\.plot(\.\w+)?\(|plot_history\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_charts_have_titles_and_axis_labels(path):
    nb = nbformat.read(path, as_version=4)
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or not MAKES_A_CHART.search(cell.source):
            continue
        src = cell.source
        if "imshow" in src and re.search(r"set_xticks|set_axis_off", src):
            continue  # a matrix with labelled rows and columns, or a picture
        assert re.search(r"title=|set_title\(|suptitle\(", src), f"cell {number} draws a chart without a title"
        assert re.search(r"xlabel|ylabel|plot_history\(", src), f"cell {number} draws a chart without axis labels"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_question_is_graded(path):
    """Each exercise ("**N.** ...") has a check_ call before the next exercise or section."""
    nb = nbformat.read(path, as_version=4)
    question = None
    for cell in [*nb.cells, nbformat.v4.new_markdown_cell("## End")]:
        if cell.cell_type == "markdown" and (re.match(r"\s*\*\*\d+[a-z]?\.\*\*", cell.source) or
                                             re.match(r"\s*##? ", cell.source)):
            assert question is None, f"exercise {question!r} has no check_... cell"
            match = re.match(r"\s*\*\*(\d+[a-z]?)\.\*\*", cell.source)
            question = match[1] if match else None
        elif cell.cell_type == "code" and re.search(r"\bcheck_\w+\(", cell.source):
            question = None
