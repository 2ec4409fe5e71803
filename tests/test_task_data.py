"""nemo_gym.task_data: a server's `TaskData` schema loaded from its task_data.py, rows of every
shape (flat, under verifier_metadata, under task_data, materialized) validated against it, and a
report that names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_gym.task_data import (
    TaskDataSchemaError,
    TaskDataValidator,
    load_task_data_schema,
    normalize_task_fields,
    validate_jsonl_rows,
)

SCHEMA = """
from pydantic import BaseModel, ConfigDict, Field


class TaskData(BaseModel):
    model_config = ConfigDict(extra="allow")

    question_id: str
    answer: int = Field(json_schema_extra={"legacy_location": "verifier_metadata"})
"""


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    (tmp_path / "task_data.py").write_text(SCHEMA)
    return tmp_path


def test_no_module_means_no_schema_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    assert load_task_data_schema(tmp_path) is None
    (tmp_path / "task_data.py").write_text("X = 1\n")
    with pytest.raises(TaskDataSchemaError, match="exports no `TaskData`"):
        load_task_data_schema(tmp_path)
    (tmp_path / "task_data.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TaskDataSchemaError, match="importing .*task_data.py failed: boom"):
        load_task_data_schema(tmp_path)


def test_every_row_shape_flattens_to_the_same_fields() -> None:
    flat = {"question_id": "q1", "answer": 4, "responses_create_params": {"input": "x"}, "_ng_task_index": 0}
    legacy = {"verifier_metadata": {"question_id": "q1", "answer": 4}}
    migrated = {"task_data": {"question_id": "q1", "answer": 4}, "question_id": "q1"}
    for row in (flat, legacy, migrated):
        assert normalize_task_fields(row) == ({"question_id": "q1", "answer": 4}, [])
    assert normalize_task_fields({"answer": 5, "verifier_metadata": {"answer": 4}}) == (
        {"answer": 5},
        ["answer"],
    )


def test_validator_reports_errors_conflicts_misplaced_and_unknown_keys(server_dir: Path) -> None:
    validator = TaskDataValidator("toy", load_task_data_schema(server_dir), "toy.jsonl")
    validator.validate_row(0, {"verifier_metadata": {"question_id": "q", "answer": 1}})
    assert validator.report.clean
    validator.validate_row(1, {"question_id": "q", "answer": 1})  # read from verifier_metadata at run time
    validator.validate_row(2, {"question_id": "q", "answer": "many", "colour": "red"})
    validator.validate_row(3, {"question_id": "q", "task_data": {"answer": 1}, "answer": 2})
    validator.validate_row(4, {"task_id": {"taskset": "t", "task_id": "1"}, "task_input": [1]})
    report = validator.report
    assert (report.rows, report.error_rows) == (5, 2)
    assert report.misplaced_keys == {"answer": 2}
    assert report.conflicting_keys == {"answer": 1}
    assert report.unknown_keys == {}
    assert report.errors[1] == "4: task_input must be an object, got list"
    assert not report.clean
    summary = report.summary()
    assert (
        summary.splitlines()[0] == "toy.jsonl: 2/5 rows failed task_data validation against the `toy` schema."
    )
    assert "keys given twice with different values (ambiguous): answer (1 rows)" in summary


def test_materialized_rows_and_unknown_keys(server_dir: Path) -> None:
    lines = [
        json.dumps(
            {
                "task_id": {"taskset": "t", "task_id": "1"},
                "task_input": {"task_data": {"question_id": "q", "answer": 3}},
            }
        ),
        "",
        json.dumps({"verifier_metadata": {"question_id": "q", "answer": 3, "colour": "red"}}),
    ]
    report = validate_jsonl_rows("toy", load_task_data_schema(server_dir), "toy.jsonl", lines)
    assert (report.rows, report.error_rows) == (2, 0)
    assert report.unknown_keys == {"colour": 1}
    assert report.misplaced_keys == {}
