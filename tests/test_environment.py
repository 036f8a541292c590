"""pyproject.toml (ranges), constraints.txt (CI's exact pins) and environment.yml agree."""

from __future__ import annotations

import re
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
