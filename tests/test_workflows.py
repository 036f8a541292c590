"""The CI workflows parse, run the README's commands, and the GPU job does what docs/gpu-validation.md says."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def _commands(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_runs_make_test_on_both_pythons_with_a_pip_cache():
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    job = ci["jobs"]["test"]
    assert job["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
    assert "make test" in _commands(job)


def test_gpu_job_runs_nbval_the_check_and_the_benchmark_on_a_gpu_runner():
    gpu = _load("gpu.yml")
    assert gpu["on"]["pull_request"]["types"] == ["labeled", "synchronize"]
    assert "schedule" in gpu["on"] and "workflow_dispatch" in gpu["on"]
    job = gpu["jobs"]["notebooks"]
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    assert "'gpu'" in job["if"]  # a pull request runs it only with the label
    commands = _commands(job)
    for needed in ("torch.cuda.is_available()", "--nbval-lax", "llmimg reproduce", "$CHECK", "changed_notebooks",
                   "make bench", "make venv"):
        assert needed in commands, needed
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    for path in ("build/notebooks/", "build/report.html", "build/results.json", "figures/"):
        assert path in upload["with"]["path"]
    assert "'[\"default\", \"full\"]'" in job["strategy"]["matrix"]["profile"]  # nightly: both profiles


def test_the_workflows_commands_are_the_readmes():
    readme = (ROOT / "README.md").read_text()
    for command in ("make test", "make bench", "llmimg reproduce", "--check", "--nbval-lax", "make venv"):
        assert command in readme, command
    assert "docs/gpu-validation.md" in readme and (ROOT / "docs" / "gpu-validation.md").is_file()
