"""Run every notebook of the suite, in order, and collect what it produced.

This is the engine behind ``llmimg reproduce``. Each ``notebooks/NN_*.ipynb`` is
executed by papermill on a fresh kernel with the profile injected (as the ``PROFILE``
parameter and as ``$LLMIMG_PROFILE``). The run leaves:

* the executed notebooks in ``build/notebooks/``,
* every PNG they display in ``figures/<stem>_figNN.png`` (stable names),
* one self-contained HTML report, ``build/report.html``,
* the headline numbers the notebooks record (:func:`llmimg.course.reference.record`) in
  ``build/results.json``, checked against ``data/reference/<profile>.json`` in the report,
* optionally (``write_back=True``) the outputs written back into ``notebooks/`` for
  committing, without papermill's injected cell and metadata.

Nothing it writes holds an absolute path of the machine it ran on.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm

from llmimg.core.config import (NOTEBOOK_ENV, PROFILE_ENV, REPO_URL, get_profile, package_version, pin_folders,
                                project_root)
from llmimg.core.store import atomic_write
from llmimg.course.reference import check, load_results, verdict

__all__ = ["NotebookFailed", "NotebookRun", "WriteBackRefused", "changed_notebooks", "discover_notebooks", "reproduce"]

NOTEBOOK_PATTERN = re.compile(r"^\d{2}_.+\.ipynb$")
INJECTED_TAG = "injected-parameters"
ERROR_MARKER_TAG = "papermill-error-cell-tag"  # cells papermill adds to a failed notebook
BINARY_MIME = ("image/png", "image/jpeg", "image/gif")


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran; says which notebook, which cell and what error."""

    def __init__(self, notebook: str, cell: int, error: str, executed: str) -> None:
        self.notebook = notebook  # relative to the root, e.g. "notebooks/02_x.ipynb"
        self.cell = cell  # 1-based, in the source notebook (markdown cells count)
        self.error = error  # "ValueError: message"
        self.executed = executed  # the executed notebook, relative to the root
        super().__init__(
            f"{notebook} failed at cell {cell}: {error} (executed notebook: {executed})"
        )


class WriteBackRefused(RuntimeError):
    """Write-back found an output that must not be committed (an error or a machine path)."""


@dataclass
class NotebookRun:
    """The outcome of one notebook: its name (stem), run time, figures (relative paths), success."""

    name: str
    seconds: float
    figures: list[str] = field(default_factory=list)
    ok: bool = True


def discover_notebooks(notebooks_dir: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The suite's notebooks (``NN_*.ipynb``) in ``notebooks_dir``, sorted by name.

    ``only`` keeps those whose stem equals or starts with one of the selectors
    (``["02", "01_math"]``; a file name or path such as ``notebooks/02_x.ipynb`` works
    too). A selector matching nothing is a ``ValueError`` listing what is available.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebook folder not found: {notebooks_dir}")
    found = sorted(p for p in notebooks_dir.iterdir() if p.is_file() and NOTEBOOK_PATTERN.match(p.name))
    if only is None:
        return found
    chosen: set[Path] = set()
    for selector in only:
        key = Path(str(selector).strip()).name.removesuffix(".ipynb")
        matches = [p for p in found if key and p.stem.startswith(key)]
        if not matches:
            available = ", ".join(p.stem for p in found) or "none"
            raise ValueError(f"no notebook matches {selector!r}; available notebooks: {available}")
        chosen.update(matches)
    return [p for p in found if p in chosen]


# A change to these paths can change any notebook's outputs.
RUN_ALL_PREFIXES = ("lib/", "pyproject.toml", "constraints.txt", "environment.yml", "data/reference/")


def changed_notebooks(root: Path, since: str) -> list[str] | None:
    """The notebooks (stems) that the changes since git revision ``since`` touch; None means all of them.

    Changes are counted from the merge base of ``since`` and ``HEAD`` to the working tree,
    so a pull request's commits and uncommitted edits both count. A change under
    ``lib/``, to the dependencies or to the reference numbers touches every notebook.
    ``since`` must name a revision: text starting with ``-`` would reach git as an option,
    so it is refused.
    """
    root = Path(root)
    if not since or since.startswith("-"):
        raise ValueError(f"--changed-since takes a git revision (a branch, tag or commit), got {since!r}")

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise ValueError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    base = git("merge-base", "--end-of-options", since, "HEAD").strip()
    paths = git("diff", "--name-only", base).splitlines() + git("ls-files", "--others", "--exclude-standard").splitlines()
    if any(path.startswith(RUN_ALL_PREFIXES) for path in paths):
        return None
    stems = {Path(path).stem for path in paths
             if path.startswith("notebooks/") and NOTEBOOK_PATTERN.match(Path(path).name)}
    return sorted(stems)


def reproduce(
    profile: str | None = None,
    *,
    root: Path | None = None,
    only: Sequence[str] | None = None,
    write_back: bool = False,
    progress: bool = True,
    timeout: int | None = 1800,
) -> list[NotebookRun]:
    """Run the notebooks in order on fresh kernels at ``profile`` and collect the results.

    ``root`` is the checkout (default: the one this package runs from). Executed
    notebooks go to ``build/notebooks/``, figures to ``figures/``, the report to
    ``build/report.html`` (written even on failure). Stops at the first failing
    notebook and raises :class:`NotebookFailed`. ``timeout`` is per cell, in seconds
    (``None``: no limit). With ``write_back``, a fully successful run also writes the
    outputs back into ``notebooks/`` (refusing, with :class:`WriteBackRefused`, outputs
    holding errors or machine paths).
    """
    pin_folders()  # the notebooks run in notebooks/: a relative $LLMIMG_CACHE_DIR means the folder it was set in
    if root is None:
        root = project_root()
        if root is None:
            raise RuntimeError(
                "llmimg reproduce needs the notebooks of a source checkout: run it from a clone "
                f"of the repository ({REPO_URL}) installed with `pip install -e .`"
            )
    root = Path(root).resolve()
    prof = get_profile(profile)
    notebooks = discover_notebooks(root / "notebooks", only)
    if not notebooks:
        raise RuntimeError(f"no notebooks (NN_*.ipynb) found in {_rel(root / 'notebooks', root)}")
    build = root / "build" / "notebooks"
    build.mkdir(parents=True, exist_ok=True)
    (root / "figures").mkdir(exist_ok=True)

    runs: list[NotebookRun] = []
    executed: dict[str, nbformat.NotebookNode] = {}
    failure: NotebookFailed | None = None
    bar = tqdm(notebooks, desc="notebooks", unit="notebook", disable=not progress)
    try:
        for source in bar:
            bar.set_description(source.stem)
            output = build / source.name
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                with _environ(PROFILE_ENV, prof.name), _environ(NOTEBOOK_ENV, source.stem):
                    papermill.execute_notebook(
                        str(source),
                        str(output),
                        parameters={"PROFILE": prof.name},
                        kernel_name="python3",
                        cwd=str(root / "notebooks"),
                        progress_bar=False,
                        execution_timeout=timeout,
                        log_output=False,
                        # ipykernel's start-up warnings would interleave with the progress bar.
                        extra_arguments=["--IPKernelApp.log_level=ERROR"],
                    )
            except PapermillExecutionError as exc:
                error = exc
            except Exception as exc:  # kernel start-up and the like: report, then re-raise
                runs.append(NotebookRun(source.stem, time.perf_counter() - start, [], ok=False))
                _write_report(root, prof.name, notebooks, runs, None, f"{type(exc).__name__}: {exc}")
                raise
            seconds = time.perf_counter() - start
            nb = _relativise_metadata(output, root)
            figures = _extract_figures(nb, source.stem, root)
            runs.append(NotebookRun(source.stem, seconds, figures, ok=error is None))
            if isinstance(error, PapermillExecutionError):
                failure = _failure(error, nb, source, output, root, timeout)
                break
            executed[source.stem] = nb
    finally:
        bar.close()

    _write_report(root, prof.name, notebooks, runs, failure, None)
    if failure is not None:
        raise failure
    if write_back:
        for name, nb in executed.items():  # check all before writing any
            _check_committable(nb, f"notebooks/{name}.ipynb", root)
        for name, nb in executed.items():
            _write_atomic(_strip_papermill(nb), root / "notebooks" / f"{name}.ipynb")
    return runs


# --------------------------------------------------------------------------- helpers


@contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the duration of the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, as a POSIX string (never an absolute path)."""
    return Path(path).resolve().relative_to(root).as_posix()


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _write_atomic(nb_or_text: nbformat.NotebookNode | str, path: Path) -> None:
    """Write a notebook or a text to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        if isinstance(nb_or_text, str):
            f.write(nb_or_text)
        else:
            nbformat.write(nb_or_text, f)


def _relativise_metadata(output: Path, root: Path) -> nbformat.NotebookNode:
    """Load an executed notebook and make papermill's recorded paths relative to ``root``."""
    nb = nbformat.read(output, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = _rel(Path(meta[key]), root)
    _write_atomic(nb, output)
    return nb


def _extract_figures(nb: nbformat.NotebookNode, stem: str, root: Path) -> list[str]:
    """Save every PNG output as ``figures/<stem>_figNN.png`` (stale ones removed first)."""
    folder = root / "figures"
    for stale in folder.glob(f"{stem}_fig*.png"):
        stale.unlink()
    figures = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                path = folder / f"{stem}_fig{len(figures) + 1:02d}.png"
                path.write_bytes(base64.b64decode(png))
                figures.append(_rel(path, root))
    return figures


def _failure(
    exc: PapermillExecutionError,
    nb: nbformat.NotebookNode,
    source: Path,
    output: Path,
    root: Path,
    timeout: int | None,
) -> NotebookFailed:
    """Turn papermill's error into a :class:`NotebookFailed` with the source notebook's cell number."""
    # exc.cell_index counts the executed cells before papermill added its error markers;
    # in the source notebook, the injected-parameters cell does not exist.
    cells = [c for c in nb.cells if ERROR_MARKER_TAG not in _tags(c)]
    before = cells[: exc.cell_index + 1]
    cell = sum(INJECTED_TAG not in _tags(c) for c in before)
    if exc.ename == "CellExecutionError" and not exc.evalue:
        limit = f"timed out after {timeout} s, or " if timeout else ""
        error = f"CellExecutionError: the cell did not complete ({limit}the kernel died)"
    else:
        error = f"{exc.ename}: {exc.evalue}"
    return NotebookFailed(_rel(source, root), cell, error, _rel(output, root))


def _title(nb: nbformat.NotebookNode) -> str:
    """The first ``# `` heading of the first markdown cell, or an empty string."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            return ""
    return ""


def _write_report(
    root: Path,
    profile: str,
    notebooks: list[Path],
    runs: list[NotebookRun],
    failure: NotebookFailed | None,
    crash: str | None,
) -> None:
    """Write ``build/report.html``: the run's summary table, then each notebook's figures."""
    e = html.escape
    done = {r.name: r for r in runs}
    rows, sections = [], []
    for path in notebooks:
        run = done.get(path.stem)
        title = _title(nbformat.read(path, as_version=4))
        if run is None:
            status, seconds = "not run", ""
        else:
            status, seconds = ("ok" if run.ok else "FAILED"), f"{run.seconds:.1f}"
        rows.append(
            f'<tr class="{status.lower().replace(" ", "-")}"><td>{e(path.name)}</td>'
            f"<td>{e(title)}</td><td>{status}</td><td>{seconds}</td></tr>"
        )
        if run is None:
            continue
        body = []
        if not run.ok:
            if failure is not None:
                body.append(
                    f'<p class="error">Failed at cell {failure.cell}: {e(failure.error)} '
                    f"(executed notebook: <code>{e(failure.executed)}</code>)</p>"
                )
            elif crash:
                body.append(f'<p class="error">{e(crash)}</p>')
        for fig in run.figures:
            data = base64.b64encode((root / fig).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{e(fig)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(fig)}</figcaption></figure>"
            )
        if not run.figures:
            body.append("<p>No figures.</p>")
        sections.append(f"<section><h2>{e(path.name)}: {e(title)}</h2>{''.join(body)}</section>")
    ok = failure is None and crash is None
    checks = _check_section(root, profile, [r.name for r in runs]) + _published_section(root, profile)
    date = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmimg reproduce report</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
tr.failed td, .error {{ color: #b00; font-weight: bold; }} tr.not-run td {{ color: #888; }}
img {{ max-width: 100%; }} figure {{ margin: 1rem 0; }}
</style></head><body>
<h1>llmimg reproduce report</h1>
<p>Profile: <b>{e(profile)}</b> &middot; date: {e(date)} &middot; llmimg {e(package_version())}
&middot; result: <b>{"all notebooks ran" if ok else "FAILED"}</b></p>
<table><tr><th>Notebook</th><th>Title</th><th>Status</th><th>Seconds</th></tr>
{chr(10).join(rows)}
</table>
{checks}
{chr(10).join(sections)}
</body></html>
"""
    _write_atomic(page, root / "build" / "report.html")


def _check_section(root: Path, profile: str, ran: list[str]) -> str:
    """The report's table of reference numbers against this run (empty without a reference file)."""
    try:
        rows = check(root, profile, notebooks=ran)
    except (FileNotFoundError, ValueError) as exc:
        return f"<p>Reference numbers not checked: {html.escape(str(exc))}</p>"
    if not rows:
        return ""
    e = html.escape
    body = "\n".join(
        f'<tr class="{"ok" if r.ok else "failed"}"><td>{e(r.name)}</td><td>{e(r.notebook)}</td>'
        f"<td>{r.reference:.4f}</td><td>± {r.tolerance:.4f}</td>"
        f"<td>{'missing' if r.got is None else f'{r.got:.4f}'}</td><td>{'yes' if r.ok else 'NO'}</td></tr>"
        for r in rows
    )
    return (f"<h2>Reference numbers (data/reference/{e(profile)}.json)</h2><p>{e(verdict(rows))}</p>"
            "<table><tr><th>Number</th><th>Notebook</th><th>Reference</th><th>Tolerance</th><th>This run</th>"
            f"<th>Within</th></tr>\n{body}\n</table>")


def _published_section(root: Path, profile: str) -> str:
    """The report's table of published results beside this run's miniature of each."""
    path = root / "data" / "reference" / "published.json"
    if not path.is_file():
        return ""
    got = load_results(root, profile)
    e = html.escape
    rows = []
    for item in json.loads(path.read_text(encoding="utf-8"))["results"]:
        ours = ", ".join(f"{name.rsplit('.', 1)[-1]} {got[name]['value']:.3f}" if name in got else
                         f"{name.rsplit('.', 1)[-1]} (not run)" for name in item["ours"])
        rows.append(f"<tr><td>{e(item['result'])}</td><td>{e(item['paper'])}; {e(item['where'])}</td>"
                    f"<td>{e(item['published'])}</td><td>{e(item['notebook'])}: {e(ours)}</td></tr>")
    return ("<h2>Published results beside ours</h2><table><tr><th>Result</th><th>Paper, where</th>"
            "<th>Published</th><th>Ours (this run)</th></tr>\n" + "\n".join(rows) + "\n</table>")


def _check_committable(nb: nbformat.NotebookNode, name: str, root: Path) -> None:
    """Raise :class:`WriteBackRefused` if an output holds an error or a machine path."""
    paths = {str(root), str(Path(root).resolve())}
    home = str(Path.home())
    if len(home) > 1:
        paths.add(home)
    for number, cell in enumerate(
        (c for c in nb.cells if INJECTED_TAG not in _tags(c)), start=1
    ):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                raise WriteBackRefused(
                    f"{name}: cell {number} has an error output ({out.ename}); not written back"
                )
            texts = [out.get("text", "")]
            texts += [
                v if isinstance(v, str) else str(v)
                for k, v in out.get("data", {}).items()
                if k not in BINARY_MIME
            ]
            for text in texts:
                for path in sorted(paths, key=len, reverse=True):
                    if path in text:
                        kind = "your home folder" if path == home else "the checkout's absolute path"
                        raise WriteBackRefused(
                            f"{name}: an output of cell {number} contains {kind}; print paths "
                            "relative to the repository instead. Not written back."
                        )


def _strip_papermill(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` fit to commit: no injected cell, no run metadata, counts from 1.

    Papermill's metadata, nbclient's per-cell timestamps and empty tag lists change on
    every run; dropping them keeps a re-run's diff down to what really changed.
    """
    nb = nbformat.from_dict(nb)  # deep copy
    nb.metadata.pop("papermill", None)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    count = 0
    for cell in nb.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if out.output_type == "execute_result":
                    out.execution_count = count
    return nb
