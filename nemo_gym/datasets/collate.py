"""NeMo Gym's data preparation: the datasets a config declares (`datasets:` in an agent's or a
resources server's block), checked row by row and collated into one file per type with metrics.

`mode: example_validation` takes the `example` datasets (the committed smoke-test rows every
environment ships); `mode: train_preparation` takes `train`, `validation` and `benchmark`. Each
collated row carries `agent_ref` naming the agent that runs it (the declaring agent, or the one
agent wired to the declaring resources server), so `ng_collect_rollouts` routes it without
`+agent_name`. Rows repeat `num_repeats` times, as NeMo Gym repeats them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nemo_gym.config import ConfigError
from nemo_gym.rollouts.aggregate import resources_server_of
from nemo_gym.rollouts.keys import AGENT_REF_KEY

Mode = Literal["train_preparation", "example_validation"]
TYPES_BY_MODE: dict[str, tuple[str, ...]] = {
    "train_preparation": ("train", "validation", "benchmark"),
    "example_validation": ("example",),
}
AGENTS = "responses_api_agents"


class DatasetDeclaration(BaseModel):
    """One entry of a server's `datasets:` list (the keys this step reads; others are kept)."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: Literal["train", "validation", "example", "benchmark"]
    jsonl_fpath: str
    num_repeats: int = Field(1, ge=1)


@dataclass
class Declared:
    instance: str
    agent: str | None
    dataset: DatasetDeclaration
    path: Path


@dataclass
class Spread:
    """Count, mean, min, max and sample standard deviation of one per-row number (Welford)."""

    total: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def observe(self, value: float) -> None:
        self.total += 1
        delta = value - self.mean
        self.mean += delta / self.total
        self.m2 += delta * (value - self.mean)
        self.low, self.high = min(self.low, value), max(self.high, value)

    def as_dict(self) -> dict[str, float | int]:
        if not self.total:
            return {"total": 0}
        std = math.sqrt(self.m2 / (self.total - 1)) if self.total > 1 else 0.0
        return {"total": self.total, "average": self.mean, "min": self.low, "max": self.high, "stddev": std}


@dataclass
class TypeMetrics:
    examples: int = 0
    spreads: dict[str, Spread] = field(default_factory=dict)

    def observe(self, name: str, value: float) -> None:
        self.spreads.setdefault(name, Spread()).observe(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number_of_examples": self.examples,
            **{k: v.as_dict() for k, v in sorted(self.spreads.items())},
        }


def _agent_for(instance: str, group: str, config: Mapping[str, Any]) -> str | None:
    if group == AGENTS:
        return instance
    agents = [
        name
        for name, block in config.items()
        if isinstance(block, Mapping)
        and AGENTS in block
        and resources_server_of(dict(config), str(name)) == instance
    ]
    return agents[0] if len(agents) == 1 else None


def declared_datasets(config: Mapping[str, Any], types: tuple[str, ...], source_of: Any) -> list[Declared]:
    """Every dataset of the given types the config's agents and resources servers declare."""
    from nemo_gym.paths import resolve_under_cwd_or_install

    found = []
    for instance, block in config.items():
        if not isinstance(block, Mapping):
            continue
        for group in ("resources_servers", AGENTS):
            impls = block.get(group)
            if not isinstance(impls, Mapping):
                continue
            for impl, body in impls.items():
                entries = body.get("datasets") if isinstance(body, Mapping) else None
                for index, entry in enumerate(entries or []):
                    key = f"{instance}.{group}.{impl}.datasets.{index}"
                    try:
                        dataset = DatasetDeclaration.model_validate(entry)
                    except ValidationError as exc:
                        first = exc.errors()[0]
                        where = ".".join(str(p) for p in first["loc"])
                        raise ConfigError(first["msg"], key=f"{key}.{where}", source=source_of(key)) from None
                    if dataset.type in types:
                        path = resolve_under_cwd_or_install(dataset.jsonl_fpath)
                        found.append(
                            Declared(str(instance), _agent_for(str(instance), group, config), dataset, path)
                        )
    return found


def row_problem(row: Any) -> str | None:
    """Why a dataset row cannot run (None when it can)."""
    if not isinstance(row, dict):
        return "is not a JSON object"
    params = row.get("responses_create_params")
    if not isinstance(params, dict):
        return "has no 'responses_create_params' object"
    if not isinstance(params.get("input"), str | list):
        return "has no 'responses_create_params.input' (a string or a list of messages)"
    return None


def observe_row(metrics: TypeMetrics, row: dict[str, Any]) -> None:
    params = row["responses_create_params"]
    metrics.examples += 1
    messages = params["input"] if isinstance(params["input"], list) else [{"role": "user"}]
    metrics.observe(
        "number_of_turns", sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    )
    if isinstance(params.get("tools"), list):
        metrics.observe("number_of_tools", len(params["tools"]))
    if isinstance(params.get("temperature"), int | float):
        metrics.observe("temperature", float(params["temperature"]))
    metrics.observe("json_dumped_number_of_words", len(json.dumps(params).split()))


def read_rows(declared: Declared) -> list[dict[str, Any]]:
    """The rows of one dataset, each checked; the first bad one is an error naming file and line."""
    rows = []
    with declared.path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{declared.path}:{line_no}: invalid JSON ({exc.msg})", key=declared.dataset.name
                ) from None
            problem = row_problem(row)
            if problem:
                raise ConfigError(f"{declared.path}:{line_no}: the row {problem}", key=declared.dataset.name)
            rows.append(row)
    return rows


def collate(declared: list[Declared], output_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """`<output_dir>/<type>.jsonl` and `<type>_metrics.json` per type; {type: (file, metrics)}."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[Path, dict[str, Any]]] = {}
    for kind in dict.fromkeys(d.dataset.type for d in declared):
        metrics = TypeMetrics()
        target = output_dir / f"{kind}.jsonl"
        with target.open("w", encoding="utf-8") as out:
            for item in (d for d in declared if d.dataset.type == kind):
                for row in read_rows(item):
                    if item.agent is not None:
                        row[AGENT_REF_KEY] = {"type": AGENTS, "name": item.agent}
                    for _ in range(item.dataset.num_repeats):
                        observe_row(metrics, row)
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary = {"type": kind, "datasets": [d.dataset.name for d in declared if d.dataset.type == kind]}
        summary |= metrics.as_dict()
        (output_dir / f"{kind}_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        results[kind] = (target, summary)
    return results
