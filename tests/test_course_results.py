"""Notebook 00's table of where the course ends up, read from the committed experiment records."""

from __future__ import annotations

import json
import shutil

import pytest

from llmimg.core.config import project_root
from llmimg.course.results import RECORDS, course_results


def test_course_results_read_one_line_per_headline_from_the_records(tmp_path):
    table = course_results()
    assert list(table.columns) == ["experiment", "result", "record"]
    assert set(table.record) <= set(RECORDS)
    assert {"geneval-pipeline-default.json", "clip-binding-default.json", "transfer-default.json"} <= set(table.record)
    transfer = table[table.record == "transfer-default.json"].result.iloc[0]
    assert "of 3 seeds, paired" in transfer
    assert all("±" in r for r in table.result)  # every rate with its standard error
    assert course_results(tmp_path).empty  # no records (an installed package): nothing to show, no error
    shutil.copy(project_root() / "data" / "experiments" / "geneval-pipeline-default.json", tmp_path)
    record = json.loads((tmp_path / "geneval-pipeline-default.json").read_text())
    del record["val"]
    (tmp_path / "geneval-pipeline-default.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="geneval-pipeline-default.json' in the experiment records is damaged"):
        course_results(tmp_path)
