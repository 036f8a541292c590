"""pyproject.toml (ranges), constraints.txt (CI's exact pins) and environment.yml agree."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _direct_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group]
    # An extra may name another of the package's own extras ("llmimg[course]"): that is no new dependency.
    return [r for r in map(Requirement, deps) if canonicalize_name(r.name) != "llmimg"]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_constraints_pin_every_direct_dependency_within_its_range():
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for req in _direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's range {req.specifier}"


def test_constraints_pin_exact_versions_only():
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), line


def test_environment_yml_matches_pyproject_and_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_lines, "environment.yml must install the package itself, editable"
    env_pins = _pins(pip_lines)
    ci_pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    direct = {canonicalize_name(r.name) for r in _direct_requirements()}
    assert set(env_pins) == direct, f"differ: {sorted(set(env_pins) ^ direct)}"
    for name, version in env_pins.items():
        assert version == ci_pins[name], f"environment.yml pins {name}=={version}, CI pins {ci_pins[name]}"


def test_python_version_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert "sys.version_info < (3, 11)" in (ROOT / "Makefile").read_text()


# -- Colab (issue 29): the notebooks' setup cell and the runtime `make test-colab` mirrors ----------------------
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COLAB_PREINSTALLED = ("torch", "transformers", "diffusers", "ipywidgets")  # the versions the setup cell names


def _setup_cell(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def _pip_line(cell: str) -> str:
    lines = [line.strip() for line in cell.splitlines() if line.strip().startswith("%pip install")]
    assert len(lines) == 1, f"one '%pip install' line expected in the setup cell, found {len(lines)}"
    return lines[0]


def test_the_setup_cell_is_the_same_in_every_notebook():
    cells = {path.name: _setup_cell(path) for path in NOTEBOOKS}
    assert len(cells) == 10
    first = cells[NOTEBOOKS[0].name]
    assert [name for name, cell in cells.items() if cell != first] == []


def test_the_setup_cell_installs_llmimg_and_leaves_colabs_own_libraries_alone():
    from llmimg import REPO_URL

    args = shlex.split(_pip_line(_setup_cell(NOTEBOOKS[0])).removeprefix("%pip install"))
    requirements = {canonicalize_name(r.name): r for r in (Requirement(a) for a in args if not a.startswith("-"))}
    assert requirements["llmimg"].url == f"git+{REPO_URL}"
    assert not set(requirements) & {"torch", "torchvision", "torchaudio"}, "the cell must not install Colab's torch"
    flags = {a for a in args if a.startswith("-")}
    assert not flags & {"-U", "--upgrade", "--force-reinstall", "-I", "--ignore-installed", "--no-deps"}, flags


def test_constraints_colab_pins_colabs_versions_within_pyprojects_ranges():
    colab = _pins((ROOT / "constraints-colab.txt").read_text().splitlines())
    assert set(COLAB_PREINSTALLED) <= set(colab), "constraints-colab.txt must pin Colab's preinstalled libraries"
    requirements = {canonicalize_name(r.name): r for r in _direct_requirements()}
    for name, version in colab.items():
        assert name in requirements, f"constraints-colab.txt pins {name}, which llmimg does not use"
        assert requirements[name].specifier.contains(version, prereleases=True), \
            f"Colab has {name}=={version}, outside pyproject's range {requirements[name].specifier}"


def test_constraints_colab_test_tools_are_ci_s_versions():
    colab = _pins((ROOT / "constraints-colab.txt").read_text().splitlines())
    ci = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for name in ("pytest", "pytest-xdist", "nbval", "hypothesis", "ipykernel"):
        assert colab.get(name) == ci[name], f"constraints-colab.txt pins {name}=={colab.get(name)}, CI {ci[name]}"


def test_the_setup_cell_names_the_colab_runtime_it_was_checked_on():
    cell = _setup_cell(NOTEBOOKS[0])
    colab = _pins((ROOT / "constraints-colab.txt").read_text().splitlines())
    for name in COLAB_PREINSTALLED:
        major_minor = ".".join(colab[name].split(".")[:2])
        assert re.search(rf"\b{re.escape(major_minor)}\b", cell), f"the setup cell should name {name} {major_minor}"
    assert "Python 3.13" in cell and "make test-colab" in cell


def test_contributing_shows_the_setup_cell_as_it_is():
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    shown = "\n".join(line.removeprefix("   ") for line in contributing.splitlines())
    assert _setup_cell(NOTEBOOKS[0]) in shown, "CONTRIBUTING.md's notebook anatomy shows an old setup cell"
