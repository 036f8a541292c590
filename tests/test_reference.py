"""Reference numbers: recording, tolerances, the check and `llmimg reproduce --check`."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from llmimg import cli
from llmimg.course import reference as results
from llmimg.course.reproduce import changed_notebooks, reproduce

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(root: Path) -> None:
    """A run's results.json as notebooks 03 and 04 would leave it, and its reference."""
    results.record({"text_to_image_top1": 0.99}, prefix="clip.", n=1000, profile="default", root=root)
    results.record({"caption_accuracy": 0.9, "caption_accuracy_se": 0.01}, prefix="llm.", n=500,
                   profile="default", root=root)
    results.write_reference(root, "default")


def _edit_reference(root: Path, name: str, value: float) -> None:
    path = results.reference_path(root, "default")
    ref = json.loads(path.read_text())
    next(n for n in ref["numbers"] if n["name"] == name)["value"] = value
    path.write_text(json.dumps(ref))


def test_record_keeps_se_beside_its_number_and_skips_nan(tmp_path):
    entries = results.record({"a": 0.5, "a_se": 0.02, "b": float("nan"), "c_se": 0.1}, prefix="s.", n=10,
                             profile="smoke", root=tmp_path)
    assert entries == {"s.a": {"value": 0.5, "se": 0.02, "n": 10}, "s.c_se": {"value": 0.1, "n": 10}}
    results.record({"d": 1}, prefix="s.", profile="smoke", root=tmp_path)  # merges with what is there
    assert set(results.load_results(tmp_path, "smoke")) == {"s.a", "s.c_se", "s.d"}
    assert results.load_results(tmp_path, "default") == {}
    with pytest.raises(ValueError, match="record\\(\\) takes numbers; 'x' is 'high'"):
        results.record({"x": "high"}, root=tmp_path)


def test_tolerance_is_three_sd_of_a_difference_from_measured_spreads():
    # The given standard error: 3 * sqrt(2) * 0.01.
    assert results.tolerance({"value": 0.9, "se": 0.01}) == pytest.approx(0.0424, abs=1e-4)
    # A rate of 1.000 on 500 trials still spreads as if one trial had failed.
    assert results.tolerance({"value": 1.0, "n": 500}) == pytest.approx(3 * math.sqrt(2 * 0.998 * 0.002 / 500),
                                                                         rel=1e-2)
    # A wider spread over seeds wins over the sampling error.
    assert results.tolerance({"value": 0.5, "se": 0.01}, [0.4, 0.5, 0.6]) == pytest.approx(3 * math.sqrt(2) * 0.1,
                                                                                           rel=1e-2)
    assert results.tolerance({"value": 12.0}) is None  # nothing measures its spread


def test_check_passes_on_its_own_run_and_names_a_reference_moved_out_of_tolerance(tmp_path):
    _fake_run(tmp_path)
    rows = results.check(tmp_path, "default")
    assert [r.name for r in rows] == ["clip.text_to_image_top1", "llm.caption_accuracy"] and all(r.ok for r in rows)
    assert results.format_table(rows).endswith("all 2 numbers within tolerance")
    _edit_reference(tmp_path, "llm.caption_accuracy", 0.8)  # 0.1 away; the tolerance is 0.042
    rows = results.check(tmp_path, "default")
    assert [r.ok for r in rows] == [True, False]
    assert "1 of 2 numbers drifted or are missing: llm.caption_accuracy" in results.format_table(rows)


def test_written_reference_keeps_each_numbers_se_and_n(tmp_path):
    _fake_run(tmp_path)
    results.record({"seconds": 3.5, "seconds_se": 0.25}, prefix="speed.", profile="default", root=tmp_path)
    results.record({"count": 12.0}, prefix="misc.", profile="default", root=tmp_path)  # no spread: unchecked
    written = results.write_reference(tmp_path, "default")
    on_disk = json.loads(results.reference_path(tmp_path, "default").read_text())
    assert on_disk == written and results.load_reference(tmp_path, "default") == written
    numbers = {n["name"]: n for n in on_disk["numbers"]}
    assert numbers["clip.text_to_image_top1"]["n"] == 1000 and "se" not in numbers["clip.text_to_image_top1"]
    assert numbers["llm.caption_accuracy"]["se"] == 0.01 and numbers["llm.caption_accuracy"]["n"] == 500
    assert numbers["speed.seconds"]["se"] == 0.25 and "n" not in numbers["speed.seconds"]
    assert on_disk["unchecked"] == ["misc.count"]
    assert all(r.ok for r in results.check(tmp_path, "default"))


def test_writing_the_reference_replaces_only_the_notebooks_run(tmp_path, monkeypatch):
    for notebook, prefix in (("03_clip", "clip."), ("07_joint_training", "joint.")):
        monkeypatch.setenv("LLMIMG_NOTEBOOK", notebook)
        results.record({"rate": 0.5, "old": 0.4}, prefix=prefix, n=100, profile="default", root=tmp_path)
    results.write_reference(tmp_path, "default")
    results.results_path(tmp_path).unlink()  # a later run of notebook 03 alone, whose "old" number is gone
    monkeypatch.setenv("LLMIMG_NOTEBOOK", "03_clip")
    results.record({"rate": 0.6}, prefix="clip.", n=100, profile="default", root=tmp_path)
    written = results.write_reference(tmp_path, "default")
    assert {n["name"]: n["value"] for n in written["numbers"]} == {"clip.rate": 0.6, "joint.old": 0.4,
                                                                    "joint.rate": 0.5}
    results.reference_path(tmp_path, "default").write_text("{damaged")
    with pytest.raises(ValueError, match="is damaged.*git checkout.*or delete it"):
        results.write_reference(tmp_path, "default")


def test_a_number_the_run_did_not_record_fails_the_check(tmp_path):
    _fake_run(tmp_path)
    results.results_path(tmp_path).write_text(json.dumps({"default": {}}))
    rows = results.check(tmp_path, "default")
    assert not any(r.ok for r in rows) and "missing" in results.format_table(rows)


def test_reproduce_check_only_exit_status_names_the_drifted_number(tmp_path, monkeypatch, capsys):
    _fake_run(tmp_path)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr("llmimg.core.config.project_root", lambda: tmp_path)
    assert cli.main(["reproduce", "--profile", "default", "--check-only"]) == 0
    assert "all 2 numbers within tolerance" in capsys.readouterr().out
    _edit_reference(tmp_path, "clip.text_to_image_top1", 0.9)
    assert cli.main(["reproduce", "--profile", "default", "--check-only"]) == 1
    assert "drifted or are missing: clip.text_to_image_top1" in capsys.readouterr().out
    assert cli.main(["reproduce", "--profile", "smoke", "--check-only"]) == 1  # no reference for smoke
    assert "data/reference/smoke.json is missing" in capsys.readouterr().err


def test_a_broken_results_file_is_a_clear_error(tmp_path):
    results.results_path(tmp_path).parent.mkdir(parents=True)
    results.results_path(tmp_path).write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        results.load_results(tmp_path, "default")


@pytest.mark.parametrize("which, content, message", [
    ("results", [], "build/results.json does not map profiles to recorded numbers; delete build/results.json"),
    ("results", {"default": {"clip.x": 0.9}}, "default/clip.x is not a recorded number"),
    ("results", {"default": {"clip.x": {"value": "high"}}}, "default/clip.x is not a recorded number"),
    ("reference", {}, "default.json has no list of numbers; restore it with `git checkout"),
    ("reference", {"numbers": [{"name": "clip.x", "value": 1.0}]}, "number 1 is not a name, a value, a tolerance"),
    ("reference", {"numbers": [{"name": "clip.x", "value": 1.0, "tolerance": 0.1, "se": "small"}]},
     "number 1 is not a name, a value, a tolerance"),
    ("reference", [1, 2], "has no list of numbers"),
])
def test_check_only_with_files_of_the_wrong_shape_is_one_line(tmp_path, monkeypatch, capsys, which, content, message):
    _fake_run(tmp_path)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr("llmimg.core.config.project_root", lambda: tmp_path)
    path = results.results_path(tmp_path) if which == "results" else results.reference_path(tmp_path, "default")
    path.write_text(json.dumps(content))
    assert cli.main(["reproduce", "--profile", "default", "--check-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmimg: error: ") and message in err and err.count("\n") == 1, err


def test_notebooks_record_through_reproduce_under_their_own_name(tmp_path):
    (tmp_path / "notebooks").mkdir()
    params = new_code_cell("PROFILE = None")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(
        "from pathlib import Path\nimport llmimg.course.reference\n"
        "llmimg.course.reference.record({'x': 0.25}, n=40, profile=PROFILE, root=Path('..'));")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "03_rates.ipynb")
    reproduce("smoke", root=tmp_path, progress=False, timeout=120)
    assert results.load_results(tmp_path, "smoke") == {"x": {"value": 0.25, "n": 40, "notebook": "03_rates"}}


def test_committed_reference_matches_the_notebooks_that_print_it():
    ref = json.loads((ROOT / "data" / "reference" / "default.json").read_text())
    stems = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    for number in ref["numbers"]:
        assert number["notebook"] in stems, number
        assert number["tolerance"] > 0, number
        source = (ROOT / "notebooks" / f"{number['notebook']}.ipynb").read_text()
        assert "reference.record(" in source, number


def test_every_published_comparison_names_numbers_of_the_reference():
    # the report puts each published result beside "ours": a renamed number would read "(not run)" there
    names = {n["name"] for n in json.loads((ROOT / "data" / "reference" / "default.json").read_text())["numbers"]}
    published = json.loads((ROOT / "data" / "reference" / "published.json").read_text())["results"]
    assert [name for item in published for name in item["ours"] if name not in names] == []


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_changed_notebooks_follow_the_diff(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    for path in ("notebooks/03_clip.ipynb", "notebooks/04_llm.ipynb", "README.md", "lib/llmimg/x.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("0")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "base")
    assert changed_notebooks(tmp_path, "main") == []
    (tmp_path / "README.md").write_text("1")
    (tmp_path / "notebooks" / "04_llm.ipynb").write_text("1")
    (tmp_path / "notebooks" / "07_new.ipynb").write_text("new")  # untracked counts too
    assert changed_notebooks(tmp_path, "main") == ["04_llm", "07_new"]
    (tmp_path / "lib" / "llmimg" / "x.py").write_text("1")
    assert changed_notebooks(tmp_path, "main") is None  # the library: every notebook
    with pytest.raises(ValueError, match="git merge-base"):
        changed_notebooks(tmp_path, "no-such-branch")


def test_seed_spread_retrains_a_stage_per_seed_and_feeds_the_tolerance(tmp_path, monkeypatch):
    from llmimg.research import seed_spread as seeds
    from llmimg.stages import clip

    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))
    record = seeds.run("smoke", (0, 1), stages=("clip",), progress=False, record=False)
    assert record["seeds"] == [0, 1] and set(record["numbers"]) == {
        f"clip.{k}" for k in clip.HEADLINE}
    assert all(len(v) == 2 for v in record["numbers"].values())
    assert len(list((tmp_path / "smoke").glob("clip-*"))) == 2  # two models: the seed reached training
    with pytest.raises(ValueError, match="at least two different seeds"):
        seeds.run("smoke", (3, 3), record=False)


def test_checking_outside_a_checkout_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr("llmimg.core.config.project_root", lambda: None)
    assert cli.main(["reproduce", "--check-only"]) == 1
    assert "need a source checkout" in capsys.readouterr().err


def test_write_reference_takes_the_clips_seed_spread_from_its_binding_experiment(tmp_path, monkeypatch, capsys):
    """No seed-spread record, but a clip-binding one: the CLIP's tolerance is its spread over the three seeds."""
    from llmimg.research import clip_binding

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    monkeypatch.setenv("LLMIMG_EXPERIMENTS_DIR", str(experiments))
    monkeypatch.setattr("llmimg.core.config.project_root", lambda: tmp_path)
    results.record({"text_to_image_top1": 0.99}, prefix="clip.", n=1000, profile="default", root=tmp_path)
    runs = [{"seed": s, "text_to_image_top1": v, "image_to_text_top1": v, "heldout_text_to_image_top1": v}
            for s, v in enumerate((0.90, 0.95, 1.0))]
    clip_binding.results_path("default").write_text(json.dumps({"runs": {clip_binding.DEFAULT: runs}}))
    assert cli.main(["reproduce", "--profile", "default", "--check-only", "--write-reference"]) == 0
    number = results.load_reference(tmp_path, "default")["numbers"][0]
    assert number["name"] == "clip.text_to_image_top1"
    assert number["tolerance"] == pytest.approx(3 * math.sqrt(2) * 0.05, rel=1e-2)  # the seeds' sd, 0.05
