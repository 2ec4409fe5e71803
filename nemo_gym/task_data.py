"""Task data schemas: a server may declare the fields its dataset rows carry in a `task_data.py`
that exports `TaskData` (a pydantic model, or a union a `TypeAdapter` takes), and datasets are
checked against it before a run.

Rows come in three shapes that carry the same fields: flat, nested under the legacy
`verifier_metadata` key, or under `task_data` (the migrated shape, also inside a materialized
row's `task_input`). Schemas are written flat, so every shape is flattened before validation; a
field given twice with different values is reported as ambiguous rather than silently picked.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from nemo_gym.episode_types import is_materialized_task_row
from nemo_gym.paths import resolve_under_cwd_or_install

TASK_DATA_MODULE_NAME = "task_data"
TASK_DATA_EXPORT_NAME = "TaskData"
LEGACY_METADATA_KEY = "verifier_metadata"
TASK_DATA_ROW_KEY = "task_data"
# Keys the framework owns on a row; never task fields.
RESERVED_ROW_KEYS = frozenset(
    {"responses_create_params", "agent_ref", "task_source", "_ng_task_index", "_ng_rollout_index"}
)


class TaskDataSchemaError(Exception):
    """A server's `task_data.py` exists but cannot serve as a schema."""


def find_server_dir(server_name: str, base_folder: str = "resources_servers") -> Path | None:
    """`<base_folder>/<server_name>` under the component search roots, if it is there."""
    candidate = resolve_under_cwd_or_install(Path(base_folder) / server_name, validator=Path.is_dir)
    return candidate if candidate.is_dir() else None


def load_task_data_schema(server_dir: Path) -> TypeAdapter | None:
    """A `TypeAdapter` over the server's `TaskData`; None when it declares no schema."""
    module_path = Path(server_dir) / f"{TASK_DATA_MODULE_NAME}.py"
    if not module_path.is_file():
        return None
    module_name = f"nemo_gym_task_data.{Path(server_dir).name}"
    spec = importlib.util.spec_from_file_location(module_name, module_path)
    if spec is None or spec.loader is None:
        raise TaskDataSchemaError(f"cannot import {module_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves the module's annotations through it
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise TaskDataSchemaError(f"importing {module_path} failed: {error}") from error
    schema = getattr(module, TASK_DATA_EXPORT_NAME, None)
    if schema is None:
        raise TaskDataSchemaError(
            f"{module_path} exports no `{TASK_DATA_EXPORT_NAME}` (a pydantic model or a union of them)"
        )
    try:
        return TypeAdapter(schema)
    except Exception as error:
        raise TaskDataSchemaError(
            f"`{TASK_DATA_EXPORT_NAME}` of {module_path} is not a schema: {error}"
        ) from error


def normalize_task_fields(row: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the row's task fields, flat; the keys given twice with different values)."""
    fields = {key: value for key, value in row.items() if key not in RESERVED_ROW_KEYS}
    conflicts: list[str] = []
    for container_key in (LEGACY_METADATA_KEY, TASK_DATA_ROW_KEY):
        container = fields.pop(container_key, None)
        if container is None:
            continue
        if not isinstance(container, Mapping):
            fields[container_key] = container  # malformed: the schema says what is wrong with it
            continue
        for key, value in container.items():
            if key in fields and fields[key] != value:
                conflicts.append(key)
            else:
                fields[key] = value
    return fields, conflicts


@dataclass
class TaskDataValidationReport:
    """What one dataset file's rows showed against one server's schema."""

    server_name: str
    dataset_fpath: str
    rows: int = 0
    error_rows: int = 0
    errors: list[str] = field(default_factory=list)
    unknown_keys: dict[str, int] = field(default_factory=dict)
    conflicting_keys: dict[str, int] = field(default_factory=dict)
    misplaced_keys: dict[str, int] = field(default_factory=dict)

    # Enough rows' errors to see the pattern; the count says how many there are.
    MAX_RECORDED_ERRORS = 5

    @property
    def clean(self) -> bool:
        return not (self.error_rows or self.conflicting_keys or self.misplaced_keys or self.unknown_keys)

    def add_error(self, row_index: int, message: str) -> None:
        self.error_rows += 1
        if len(self.errors) < self.MAX_RECORDED_ERRORS:
            self.errors.append(f"{row_index}: {message}")

    def summary(self) -> str:
        lines = [
            f"{self.dataset_fpath}: {self.error_rows}/{self.rows} rows failed task_data validation "
            f"against the `{self.server_name}` schema."
        ]
        lines += [f"  row {error}" for error in self.errors]
        if self.error_rows > len(self.errors):
            lines.append(f"  ... and {self.error_rows - len(self.errors)} more rows")
        for counts, what in (
            (self.conflicting_keys, "keys given twice with different values (ambiguous)"),
            (self.misplaced_keys, "keys the server reads from verifier_metadata but found at the top level"),
            (self.unknown_keys, "keys the schema does not declare (a typo, or a missing schema field?)"),
        ):
            if counts:
                listed = ", ".join(f"{key} ({n} rows)" for key, n in sorted(counts.items()))
                lines.append(f"  {what}: {listed}")
        return "\n".join(lines)


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models(arg)]


def legacy_metadata_fields(adapter: TypeAdapter) -> frozenset[str]:
    """Schema fields marked `json_schema_extra={"legacy_location": "verifier_metadata"}`: the
    server still reads them from inside `verifier_metadata`."""
    return frozenset(
        name
        for model in _models(getattr(adapter, "_type", None))
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict)
        and info.json_schema_extra.get("legacy_location") == LEGACY_METADATA_KEY
    )


def _count(counts: dict[str, int], keys: Iterable[str]) -> None:
    for key in keys:
        counts[key] = counts.get(key, 0) + 1


class TaskDataValidator:
    """Validates rows one at a time, accumulating a `TaskDataValidationReport`."""

    def __init__(self, server_name: str, adapter: TypeAdapter, dataset_fpath: str) -> None:
        self._adapter = adapter
        self._legacy_fields = legacy_metadata_fields(adapter)
        self.report = TaskDataValidationReport(server_name=server_name, dataset_fpath=dataset_fpath)

    def validate_row(self, row_index: int, row: Mapping[str, Any]) -> None:
        self.report.rows += 1
        migrated = TASK_DATA_ROW_KEY in row
        if is_materialized_task_row(row):
            unwrapped = self._unwrap_materialized(row_index, row["task_input"])
            if unwrapped is None:
                return
            row, migrated = unwrapped
        if self._legacy_fields and not migrated:
            nested = row.get(LEGACY_METADATA_KEY)
            inside = set(nested) if isinstance(nested, Mapping) else set()
            _count(self.report.misplaced_keys, (row.keys() & self._legacy_fields) - inside)
        fields, conflicts = normalize_task_fields(row)
        _count(self.report.conflicting_keys, conflicts)
        try:
            validated = self._adapter.validate_python(fields)
        except Exception as error:  # a schema's own validators may raise anything
            self.report.add_error(row_index, str(error).strip().replace("\n", "; ")[:400])
            return
        if isinstance(validated, BaseModel):
            _count(self.report.unknown_keys, validated.model_extra or {})

    def _unwrap_materialized(self, row_index: int, task_input: Any) -> tuple[dict[str, Any], bool] | None:
        """A materialized row's task fields (its `task_input`, with `task_data` spliced in)."""
        if not isinstance(task_input, Mapping):
            self.report.add_error(row_index, f"task_input must be an object, got {type(task_input).__name__}")
            return None
        task_data = task_input.get(TASK_DATA_ROW_KEY, {})
        if not isinstance(task_data, Mapping):
            self.report.add_error(
                row_index, f"task_input.task_data must be an object, got {type(task_data).__name__}"
            )
            return None
        flat = dict(task_data)
        for key, value in task_input.items():
            if key == TASK_DATA_ROW_KEY:
                continue
            if key in flat and flat[key] != value:
                _count(self.report.conflicting_keys, [key])
            else:
                flat[key] = value
        return flat, TASK_DATA_ROW_KEY in task_input


def validate_jsonl_rows(
    server_name: str, adapter: TypeAdapter, dataset_fpath: str, lines: Iterable[str]
) -> TaskDataValidationReport:
    """Validate a JSONL file's lines (blank ones skipped) against one schema."""
    validator = TaskDataValidator(server_name, adapter, dataset_fpath)
    for index, line in enumerate(lines):
        if line.strip():
            validator.validate_row(index, json.loads(line))
    return validator.report


__all__ = [
    "LEGACY_METADATA_KEY",
    "RESERVED_ROW_KEYS",
    "TASK_DATA_EXPORT_NAME",
    "TASK_DATA_MODULE_NAME",
    "TASK_DATA_ROW_KEY",
    "TaskDataSchemaError",
    "TaskDataValidationReport",
    "TaskDataValidator",
    "find_server_dir",
    "legacy_metadata_fields",
    "load_task_data_schema",
    "normalize_task_fields",
    "validate_jsonl_rows",
]
