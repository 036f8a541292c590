"""Tests of the notebook runner (llmimg.course.reproduce) on small throw-away notebooks.

Each kernel start costs a few seconds, so runs are shared between tests through
module-scoped fixtures (five kernels in all).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llmimg.core.config import PROFILE_ENV
from llmimg.course.reproduce import (
    NotebookFailed,
    NotebookRun,
    WriteBackRefused,
    discover_notebooks,
    reproduce,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _params() -> nbformat.NotebookNode:
    cell = new_code_cell("PROFILE = None")
    cell.metadata["tags"] = ["parameters"]
    return cell


def _figure(n: int) -> nbformat.NotebookNode:
    return new_code_cell(f"plt.plot([0, 1], [0, {n}])\nplt.show()")


def _make_root(path: Path, notebooks: dict[str, list[nbformat.NotebookNode]]) -> Path:
    (path / "notebooks").mkdir(parents=True)
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, path / "notebooks" / f"{name}.ipynb")
    return path


def _alpha() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell("# 01 · Alpha lesson\n\nSome words."),
        _params(),
        new_code_cell("import os\nprint('profile:', PROFILE, os.environ.get('LLMIMG_PROFILE'))"),
        new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt"),
        _figure(1),
        new_markdown_cell("Between the figures."),
        _figure(2),
    ]


def _beta() -> list[nbformat.NotebookNode]:
    return [
        new_markdown_cell("# 02 · Beta lesson"),
        _params(),
        new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt"),
        _figure(3),
    ]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Two good notebooks run at `smoke`; a stale figure exists beforehand."""
    root = _make_root(tmp_path_factory.mktemp("good"), {"01_alpha": _alpha(), "02_beta": _beta()})
    (root / "figures").mkdir()
    (root / "figures" / "01_alpha_fig07.png").write_bytes(b"stale")
    env_before = os.environ.get(PROFILE_ENV)
    runs = reproduce("smoke", root=root, progress=False, timeout=120)
    assert os.environ.get(PROFILE_ENV) == env_before  # environment restored
    return root, runs


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """A notebook whose 4th cell (markdown counted) raises, followed by one never run."""
    root = _make_root(
        tmp_path_factory.mktemp("failing"),
        {
            "01_fails": [
                new_markdown_cell("# 01 · Fails"),
                _params(),
                new_code_cell("print('before')"),
                new_code_cell("raise ValueError('boom')"),
                new_code_cell("print('after')"),
            ],
            "02_never": _beta(),
        },
    )
    with pytest.raises(NotebookFailed) as info:
        reproduce("smoke", root=root, progress=False, timeout=120)
    return root, info.value


@pytest.fixture(scope="module")
def written_back(tmp_path_factory):
    """`only=["01"]` with write-back: only 01_alpha runs and is rewritten in place."""
    root = _make_root(tmp_path_factory.mktemp("writeback"), {"01_alpha": _alpha(), "02_beta": _beta()})
    before = {p.name: p.read_text() for p in (root / "notebooks").iterdir()}
    runs = reproduce("smoke", root=root, only=["01"], write_back=True, progress=False, timeout=120)
    return root, runs, before


# ------------------------------------------------------------------ discovery


def test_discover_sorts_filters_and_rejects(tmp_path):
    root = _make_root(tmp_path, {"02_b": [], "01_a": [], "10_c": [], "notes": []})
    (root / "notebooks" / "README.md").write_text("x")
    nbdir = root / "notebooks"
    assert [p.name for p in discover_notebooks(nbdir)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.stem for p in discover_notebooks(nbdir, ["10", "01_a"])] == ["01_a", "10_c"]
    assert [p.stem for p in discover_notebooks(nbdir, ["notebooks/02_b.ipynb"])] == ["02_b"]
    with pytest.raises(ValueError, match=r"'07'.*01_a, 02_b, 10_c"):
        discover_notebooks(nbdir, ["01", "07"])


# ------------------------------------------------------------------ a good run


def test_runs_report_each_notebook(good):
    root, runs = good
    assert [r.name for r in runs] == ["01_alpha", "02_beta"]
    assert all(isinstance(r, NotebookRun) and r.ok and r.seconds > 0 for r in runs)
    for name in ("01_alpha", "02_beta"):
        assert (root / "build" / "notebooks" / f"{name}.ipynb").is_file()


def test_profile_reaches_the_notebook(good):
    root, _ = good
    nb = nbformat.read(root / "build" / "notebooks" / "01_alpha.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "profile: smoke smoke" in printed


def test_figures_extracted_with_stable_names(good):
    root, runs = good
    assert runs[0].figures == ["figures/01_alpha_fig01.png", "figures/01_alpha_fig02.png"]
    assert runs[1].figures == ["figures/02_beta_fig01.png"]
    on_disk = sorted(p.name for p in (root / "figures").iterdir())
    assert on_disk == ["01_alpha_fig01.png", "01_alpha_fig02.png", "02_beta_fig01.png"]  # stale gone
    for name in on_disk:
        assert (root / "figures" / name).read_bytes().startswith(PNG_MAGIC)


def test_report_is_self_contained_and_has_no_machine_path(good):
    root, _ = good
    report = (root / "build" / "report.html").read_text()
    for text in ("01_alpha.ipynb", "Alpha lesson", "02_beta.ipynb", "Beta lesson", "smoke"):
        assert text in report
    assert report.count('src="data:image/png;base64,') == 3
    for path in [root / "build" / "report.html", *(root / "build" / "notebooks").iterdir()]:
        assert str(root) not in path.read_text(), path.name


# ------------------------------------------------------------------ a failing run


def test_failure_names_notebook_and_source_cell(failing):
    root, exc = failing
    assert exc.notebook == "notebooks/01_fails.ipynb"
    assert exc.cell == 4
    assert exc.error == "ValueError: boom"
    assert str(exc) == (
        "notebooks/01_fails.ipynb failed at cell 4: ValueError: boom "
        "(executed notebook: build/notebooks/01_fails.ipynb)"
    )
    assert "\n" not in str(exc) and str(root) not in str(exc)


def test_failure_still_writes_report_and_executed_notebook(failing):
    root, _ = failing
    report = (root / "build" / "report.html").read_text()
    assert "ValueError: boom" in report and "02_never.ipynb" in report and "not run" in report
    assert (root / "build" / "notebooks" / "01_fails.ipynb").is_file()
    assert not (root / "build" / "notebooks" / "02_never.ipynb").exists()  # stopped at the failure


# ------------------------------------------------------------------ only + write-back


def test_only_runs_the_selected_notebook(written_back):
    root, runs, before = written_back
    assert [r.name for r in runs] == ["01_alpha"]
    assert not (root / "build" / "notebooks" / "02_beta.ipynb").exists()
    assert (root / "notebooks" / "02_beta.ipynb").read_text() == before["02_beta.ipynb"]
    with pytest.raises(ValueError, match="no notebook matches '99'"):
        reproduce("smoke", root=root, only=["99"], progress=False)


def test_write_back_strips_papermill_and_keeps_outputs(written_back):
    root, _, _ = written_back
    raw = json.loads((root / "notebooks" / "01_alpha.ipynb").read_text())
    assert "papermill" not in raw["metadata"]
    assert len(raw["cells"]) == len(_alpha())  # injected cell dropped
    assert [c["cell_type"] for c in raw["cells"]] == [c.cell_type for c in _alpha()]
    for cell in raw["cells"]:
        assert "papermill" not in cell["metadata"]
        assert "injected-parameters" not in cell["metadata"].get("tags", [])
    assert raw["cells"][1]["metadata"]["tags"] == ["parameters"]
    assert "".join(raw["cells"][1]["source"]) == "PROFILE = None"
    assert "profile: smoke" in "".join(raw["cells"][2]["outputs"][0]["text"])
    assert "image/png" in raw["cells"][4]["outputs"][0]["data"]
    counts = [c["execution_count"] for c in raw["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1))  # renumbered without the injected cell
    assert not any("execution" in c["metadata"] or c["metadata"].get("tags") == [] for c in raw["cells"])
    assert not [p for p in (root / "notebooks").iterdir() if p.name.endswith(".tmp")]


def test_write_back_refuses_machine_paths(tmp_path):
    root = _make_root(
        tmp_path,
        {"01_leaky": [new_markdown_cell("# 01 · Leaky"), _params(),
                      new_code_cell("import os\nprint(os.path.dirname(os.getcwd()))")]},
    )
    source = (root / "notebooks" / "01_leaky.ipynb").read_text()
    with pytest.raises(WriteBackRefused, match="absolute path"):
        reproduce("smoke", root=root, write_back=True, progress=False, timeout=120)
    assert (root / "notebooks" / "01_leaky.ipynb").read_text() == source  # untouched


def test_no_checkout_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("llmimg.course.reproduce.project_root", lambda: None)
    with pytest.raises(RuntimeError, match="clone of the repository"):
        reproduce("smoke", progress=False)


def test_a_relative_cache_folder_means_the_same_folder_inside_the_notebooks(tmp_path, monkeypatch):
    """Notebooks run in notebooks/: a relative $LLMIMG_CACHE_DIR must still name the folder it was set in."""
    cells = [new_markdown_cell("# 01 · Cache"), _params(),
             new_code_cell("from llmimg.core.config import cache_dir\nprint(cache_dir('smoke', create=False))")]
    root = _make_root(tmp_path / "checkout", {"01_cache": cells})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMIMG_CACHE_DIR", "my-cache")
    reproduce("smoke", root=root, progress=False, timeout=120)
    nb = nbformat.read(root / "build" / "notebooks" / "01_cache.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "cache_dir" in c.source]
    printed = "".join(o.get("text", "") for o in cell.outputs).strip()
    assert printed == str(tmp_path / "my-cache" / "smoke")
