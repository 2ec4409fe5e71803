"""`ng_collect_rollouts +agent_name=… +input_jsonl_fpath=… +output_jsonl_fpath=… [options]`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from nemo_gym.cli.common import run_cli
from nemo_gym.config import ConfigError, load_config
from nemo_gym.http.server_client import HeadServerUnreachable, ServerClient, close_shared_client
from nemo_gym.rollouts.collect import CollectSettings, RolloutCollector


def _int(cfg: dict[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = cfg.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", key=key, source="command line")
    return value


def settings_from(cfg: dict[str, Any]) -> CollectSettings:
    for key in ("agent_name", "input_jsonl_fpath", "output_jsonl_fpath"):
        if not cfg.get(key):
            raise ConfigError(f"is required (+{key}=...)", key=key, source="command line")
    input_path = Path(str(cfg["input_jsonl_fpath"]))
    if not input_path.is_file():
        raise ConfigError(
            f"input file {input_path} does not exist", key="input_jsonl_fpath", source="command line"
        )
    concurrency = cfg.get("concurrency", cfg.get("num_samples_in_parallel", 32))
    overrides = cfg.get("responses_create_params") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(
            "must be a mapping of Responses fields", key="responses_create_params", source="command line"
        )
    return CollectSettings(
        agent_name=str(cfg["agent_name"]),
        input_path=input_path,
        output_path=Path(str(cfg["output_jsonl_fpath"])),
        limit=_int(cfg, "limit", None, 0),
        concurrency=_int({"concurrency": concurrency}, "concurrency", 32, 1) or 32,
        num_repeats=_int(cfg, "num_repeats", 1, 1) or 1,
        overrides=overrides,
        resume=bool(cfg.get("resume", False)),
    )


def main(args: list[str]) -> int:
    from omegaconf import OmegaConf

    loaded = load_config(args)
    cfg: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    settings = settings_from(cfg)
    try:
        client = ServerClient.load_from_global_config(dict(cfg["head_server"]))
    except HeadServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        client.url_for(settings.agent_name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), key="agent_name", source="command line") from None
    collector = RolloutCollector(settings, client)

    async def collect() -> dict[str, Any]:
        try:
            return await collector.collect()
        finally:
            await close_shared_client()

    try:
        metrics = asyncio.run(collect())
    except KeyboardInterrupt:
        print(
            f"\nInterrupted. Finished rollouts are in {settings.output_path}; rerun with +resume=true to continue.",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(metrics, indent=2))
    print(f"Rollouts: {settings.output_path}")
    print(f"Failures: {settings.failures_path} ({metrics['num_failed']})")
    print(f"Metrics:  {settings.metrics_path}")
    return 1 if metrics["num_rollouts"] == 0 and metrics["num_failed"] > 0 else 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
