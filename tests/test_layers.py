"""The library's layout: imports point one way, no cycles, small modules, the course apart from the library.

Read from the source with ``ast``: every ``import`` counts, inside functions too, since a
function-level import is a dependency all the same (it only runs later).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmimg

PACKAGE = Path(llmimg.__file__).parent
# Layer of each top-level folder: a module may import its own layer and the ones below it.
LAYERS = {"core": 0, "stages": 1, "pipelines": 2, "speed": 3, "research": 4, "course": 4, "cli": 5}
APART = {"research", "course"}  # the two top layers, which must not import each other
MAX_LINES = 500
COURSE_EXTRA = ("papermill", "nbformat", "nbconvert", "ipywidgets", "jupyterlab", "ipykernel", "nbclient")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The llmimg modules ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llmimg")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmimg") and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) for name, path in known.items()}


def test_every_module_lives_in_a_layer():
    loose = [m for m in modules() if m not in ("llmimg", "llmimg.__main__") and layer(m) is None]
    assert not loose, f"modules outside the layer folders {sorted(LAYERS)}: {loose}"


def test_imports_point_down(graph):
    wrong = []
    for module, targets in graph.items():
        if layer(module) is None:
            continue  # llmimg/__init__ and __main__ sit on top
        for target in targets:
            if layer(target) is None:
                wrong.append(f"{module} imports the top-level {target}")
            elif LAYERS[layer(target)] > LAYERS[layer(module)]:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
            elif {layer(module), layer(target)} == APART:
                wrong.append(f"{module} and {target}: research and course do not import each other")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph):
    # A package's __init__ importing its own submodules is how a package shows its face; a cycle
    # through it would still be a cycle, so packages are nodes like any module.
    state, stack, cycles = {}, [], []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in graph[node]:
            if target == node or (target in stack and node.startswith(target + ".")):
                continue  # a module of a package naming that package is resolved to its submodules already
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_modules_are_small():
    big = {name: n for name, path in modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by role): {big}"


def test_records_and_caches_live_outside_the_package(tmp_path, monkeypatch):
    from llmimg.core import config

    for env in ({}, {config.EXPERIMENTS_ENV: str(tmp_path / "x")}, {config.CACHE_ENV: "relative-cache"}):
        for name in (config.EXPERIMENTS_ENV, config.CACHE_ENV):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        for folder in (config.experiments_dir(), config.cache_dir("smoke", create=False)):
            assert PACKAGE.resolve() not in folder.resolve().parents, folder
            assert folder.is_absolute()


def test_the_library_runs_without_the_course_extra(tmp_path):
    """``pip install llmimg`` without ``[course]``: the library, the CLI and the pipeline import and run."""
    library = sorted(m for m in modules() if layer(m) not in ("course", None) and not m.endswith("__main__"))
    script = (
        "import sys\n"
        f"for name in {COURSE_EXTRA!r}:\n"
        "    sys.modules[name] = None  # importing it now raises ImportError, as if it were not installed\n"
        "import importlib\n"
        f"for module in {library!r}:\n"
        "    importlib.import_module(module)\n"
        "from llmimg.cli.main import main\n"
        "for argv in (['--version'], ['generate', '--help'], ['train', '--help'], ['bench', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), (argv, exit.code)\n"
        "print('library ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "LLMIMG_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    assert done.returncode == 0 and "library ok" in done.stdout, done.stderr[-3000:]


def test_only_the_config_reads_the_environment():
    import re

    readers = {name for name, path in modules().items()
               if re.search(r"os\.environ\.get|os\.getenv|os\.environ\[", path.read_text(encoding="utf-8"))}
    # course.reproduce sets (and restores) the notebook and profile for the kernels it starts
    assert readers <= {"llmimg.core.config", "llmimg.course.reproduce"}, readers


def test_the_pretrained_pipeline_does_not_import_the_tiny_stack(graph):
    # Its offline mode is the exception: models trained on the tiny world, scored with the course's metrics.
    pretrained = {m for m in graph if m.startswith("llmimg.pipelines.pretrained")
                  and not m.startswith("llmimg.pipelines.pretrained.offline")}
    reached, todo = set(), list(pretrained)
    while todo:
        for target in graph[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert not {m for m in reached if m.startswith(("llmimg.stages", "llmimg.pipelines.shapes"))}


def test_importing_the_library_changes_no_logging_setting():
    code = ("from transformers.utils import logging as t; from diffusers.utils import logging as d\n"
            "before = (t.get_verbosity(), t.is_progress_bar_enabled(), d.get_verbosity(), d.is_progress_bar_enabled())\n"
            "import llmimg.stages.llm, llmimg.stages.generator, llmimg.pipelines.shapes, llmimg.pipelines.pretrained\n"
            "after = (t.get_verbosity(), t.is_progress_bar_enabled(), d.get_verbosity(), d.is_progress_bar_enabled())\n"
            "assert before == after, (before, after)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
