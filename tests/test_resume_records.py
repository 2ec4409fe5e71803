"""NeMo Gym's resume helpers in `nemo_gym.rollout_collection`: attempt cap, observed wall time, and
moving invalid-judge rows to the failures sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_gym.rollout_collection import (
    NG_TERMINAL_KEY,
    get_max_rollout_attempts,
    migrate_invalid_judge_main_rows,
    observed_elapsed,
)


@pytest.mark.parametrize(("raw", "expected"), [(None, 3), ("", 3), ("5", 5), ("0", 3), ("many", 3)])
def test_max_rollout_attempts(raw: str | None, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is None:
        monkeypatch.delenv("NEMO_GYM_MAX_ROLLOUT_ATTEMPTS", raising=False)
    else:
        monkeypatch.setenv("NEMO_GYM_MAX_ROLLOUT_ATTEMPTS", raw)
    assert get_max_rollout_attempts() == expected


def test_observed_elapsed_from_the_record_or_its_response() -> None:
    assert observed_elapsed({"elapsed_seconds": "2.5"}) == 2.5
    assert observed_elapsed({"response": {"metadata": {"elapsed_seconds": 4}}}) == 4.0
    assert observed_elapsed({"elapsed_seconds": 0, "response": {"metadata": {}}}) is None
    assert observed_elapsed({"elapsed_seconds": "soon"}) is None


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_invalid_judge_rows_move_to_the_sidecar_once(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    good = {"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0}
    bad = {"_ng_task_index": 1, "_ng_rollout_index": 0, "reward": 0.0, "invalid_judge_response": True}
    out.write_text(json.dumps(good) + "\n" + json.dumps({**bad, NG_TERMINAL_KEY: True}) + "\n")
    out.chmod(0o640)
    assert migrate_invalid_judge_main_rows(out) == 1
    assert lines(out) == [good]
    assert oct(out.stat().st_mode & 0o777) == "0o640"
    moved = lines(tmp_path / "run_failures.jsonl")
    assert moved == [
        {**bad, "_ng_migrated_invalid_judge_response": True, "_ng_failure_class": "judge_invalid"}
    ]
    # The row comes back (an old build wrote it again): it is dropped from the output, not moved twice.
    out.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert migrate_invalid_judge_main_rows(out) == 1
    assert lines(out) == [good] and lines(tmp_path / "run_failures.jsonl") == moved
    assert migrate_invalid_judge_main_rows(tmp_path / "absent.jsonl") == 0
