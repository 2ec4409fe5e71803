"""Names of the files written next to a rollouts output, shared by collection and the tools that
read its results (so both derive the same path)."""

from __future__ import annotations

from pathlib import Path

from nemo_gym.rollouts.keys import aggregate_metrics_path_for, failures_path_for


def materialized_path_for(output_fpath: Path) -> Path:
    """`out/rollouts.jsonl` → `out/rollouts_materialized_inputs.jsonl`: the rows as dispatched."""
    return output_fpath.with_name(f"{output_fpath.stem}_materialized_inputs.jsonl")


__all__ = ["aggregate_metrics_path_for", "failures_path_for", "materialized_path_for"]
