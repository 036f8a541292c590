"""What the course website is built from and by (no site tools needed): pinned JavaScript, the reference-numbers
page's comparison, the workflow that publishes it, and the README's pointer to it. tests/test_site.py checks the
built site itself."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEBSITE = ROOT / "website"
SITE_URL = "https://llmimg.github.io/llmimg/"

sys.path.insert(0, str(WEBSITE))
import reference_page  # noqa: E402  (website/, not part of the llmimg package)


def test_the_bundled_javascript_is_pinned_exactly():
    """website/package.json names exact versions, and the lock file (what `npm ci` installs) has the same."""
    wanted = json.loads((WEBSITE / "package.json").read_text())["dependencies"]
    assert set(wanted) == {"mathjax", "mermaid"}
    lock = json.loads((WEBSITE / "package-lock.json").read_text())["packages"]
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version!r} is a range; pin one version"
        locked = lock[f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-"), (name, locked)


def test_reference_page_compares_the_run_as_the_check_does(tmp_path):
    """One number within its tolerance, one outside, one not recorded: yes, NO, missing, and a verdict naming two."""
    (tmp_path / "data" / "reference").mkdir(parents=True)
    (tmp_path / "build").mkdir()
    numbers = [{"name": "a.rate", "value": 0.5, "tolerance": 0.1, "notebook": "03_clip"},
               {"name": "b.rate", "value": 0.5, "tolerance": 0.1, "notebook": "05_generator"},
               {"name": "c.rate", "value": 0.9, "tolerance": 0.05, "notebook": "05_generator"}]
    (tmp_path / "data" / "reference" / "default.json").write_text(json.dumps(
        {"profile": "default", "tolerance": "3 sd", "numbers": numbers, "unchecked": []}))

    without_run = reference_page.render(tmp_path)
    assert without_run.count("| not run |") == 3 and "NO" not in without_run

    (tmp_path / "build" / "results.json").write_text(json.dumps(
        {"default": {"a.rate": {"value": 0.6}, "b.rate": {"value": 0.3801}},  # 0.1 off: within; 0.12 off: not
         "smoke": {"c.rate": {"value": 0.9}}}))  # another profile's run does not count
    page = reference_page.render(tmp_path)
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")}
    assert "| 0.6000 | yes |" in rows["a.rate"]
    assert "| 0.3801 | **NO** |" in rows["b.rate"]
    assert "| missing | **NO** |" in rows["c.rate"]
    assert "2 of 3 numbers drifted or are missing:** b.rate (05_generator), c.rate (05_generator)" in page


def test_the_site_workflow_builds_checks_and_deploys_from_main():
    """.github/workflows/site.yml: build and check on every push and pull request, artefact, Pages from main."""
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "site.yml").read_text())
    triggers = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers) and triggers["push"] is None  # every branch
    build = workflow["jobs"]["build"]
    commands = "\n".join(step.get("run", "") for step in build["steps"])
    for command in ("make site ", "make browser-deps", "make site-test"):
        assert command in commands, command
    uploads = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert any(s["with"]["path"].strip() == "build/site/" and "if" not in s for s in uploads)
    pages = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    deploy = workflow["jobs"]["deploy"]
    for condition in (pages["if"], deploy["if"]):
        assert "refs/heads/main" in condition and "push" in condition
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])


def test_the_readme_links_the_site_and_says_how_to_build_it():
    readme = (ROOT / "README.md").read_text()
    assert SITE_URL in readme and "make site" in readme and "build/site/index.html" in readme
