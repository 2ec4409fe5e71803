"""The instruction-count harness (`make bench-instructions`): what it reads from a callgrind
dump, how it reports two checkouts, and how it refuses what it cannot do. (Running valgrind
itself is the opt-in `make bench-instructions`, not part of `make test`.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.bench import instructions
from nemo_gym.bench.instructions import Count, callgrind_totals, parse_args, table

DUMP = """# callgrind format
version: 1
creator: callgrind-3.22.0
events: Ir
summary: 391358123
totals: 391358123
"""


def test_totals_are_read_from_the_dump() -> None:
    assert callgrind_totals(DUMP) == 391_358_123
    with pytest.raises(ValueError, match="no totals line"):
        callgrind_totals("events: Ir\n")


def test_two_checkouts_side_by_side_with_the_change() -> None:
    base, head = Path("/src/base"), Path("/src/head")
    counts = [
        Count("responses", str(base), 1000, 430_240_453),
        Count("responses", str(head), 1000, 391_358_123),
        Count("chat", str(base), 500, 174_677_692),
        Count("chat", str(head), 500, 152_775_573),
    ]
    assert table(counts, [base, head]).splitlines() == [
        "| scenario | `/src/base` instructions/request | `/src/head` instructions/request | change |",
        "|---|---:|---:|---:|",
        "| responses | 430,240 | 391,358 | -9.0% |",
        "| chat | 349,355 | 305,551 | -12.5% |",
    ]


def test_one_checkout_has_no_change_column() -> None:
    here = Path("/src/head")
    assert table([Count("chat", str(here), 4, 1_000)], [here]).splitlines()[2] == "| chat | 250 |"


def test_unknown_scenarios_and_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "responses,respones"])
    assert "unknown scenarios ['respones']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--requests", "0"])
    assert "--requests must be at least 1" in capsys.readouterr().err


def test_without_valgrind_it_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert instructions.main(["--scenarios", "chat"]) == 2
    assert capsys.readouterr().err == "valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)\n"
