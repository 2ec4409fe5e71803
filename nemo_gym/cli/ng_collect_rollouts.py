"""`ng_collect_rollouts +agent_name=… +input_jsonl_fpath=… +output_jsonl_fpath=… [options]`."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import check_command_line, validate_keys
from nemo_gym.config import ConfigError, load_config
from nemo_gym.http.server_client import HeadServerUnreachable, ServerClient, close_shared_client
from nemo_gym.rollouts.collect import RolloutCollector, read_input_rows, resolve_agent
from nemo_gym.rollouts.config import RolloutCollectionConfig

COMMAND = "ng_collect_rollouts"
SUMMARY = "run each input row through an agent's /run and write scored rollouts as they finish."


CollectRolloutsKeys = RolloutCollectionConfig  # the command's keys


def _routing_check(settings: RolloutCollectionConfig, client: ServerClient) -> None:
    """Every agent a run will call must exist before the first rollout, not as N failures later."""
    names: set[str] = set()
    missing = []
    for item in read_input_rows(settings.input_path, settings.limit):
        if item.row is None:
            continue
        name = resolve_agent(settings, item.row)
        if name:
            names.add(name)
            names.update(settings.fan_out.get(name, ()))
        else:
            missing.append(item.index)
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise ConfigError(
            f"is required: input rows {shown} have no agent_ref (give +agent_name=… or an agent_ref "
            "{type: responses_api_agents, name: …} in every row)",
            key="agent_name",
            source="command line",
        )
    for name in sorted(names):
        try:
            client.url_for(name)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="agent_name", source="command line") from None


def settings_from(cfg: dict[str, Any]) -> RolloutCollectionConfig:
    keys = validate_keys(RolloutCollectionConfig, cfg)
    assert isinstance(keys, RolloutCollectionConfig)
    for key in ("input_jsonl_fpath", "output_jsonl_fpath"):
        if not getattr(keys, key):
            raise ConfigError(f"is required (+{key}=...)", key=key, source="command line")
    if not keys.input_path.is_file():
        raise ConfigError(
            f"input file {keys.input_path} does not exist", key="input_jsonl_fpath", source="command line"
        )
    return keys


KEYS = CollectRolloutsKeys  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    from omegaconf import OmegaConf

    check_command_line(COMMAND, CollectRolloutsKeys, args)
    loaded = load_config(args)
    cfg: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    settings = settings_from(cfg)
    try:
        client = ServerClient.load_from_global_config(dict(cfg["head_server"]))
    except HeadServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _routing_check(settings, client)
    return collect_and_report(settings, client)


def collect_and_report(settings: RolloutCollectionConfig, client: ServerClient) -> int:
    """Run the collection, print its summary and where its files are; the exit code."""
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
            f"\nInterrupted. Finished rollouts are in {settings.output_path}; "
            "rerun with +resume_from_cache=true to continue.",
            file=sys.stderr,
        )
        return 130
    print(json.dumps(metrics, indent=2))
    print(collector.failures.summary(metrics["num_attempted_this_run"]))
    if metrics["num_context_length_fallbacks"]:
        print(
            f"{metrics['num_context_length_fallbacks']} rollouts hit the model's context length "
            "(empty incomplete response); their prompts are too long for the model."
        )
    print(f"Rollouts: {settings.output_path}")
    print(f"Failures: {settings.failures_path} ({metrics['num_failed']})")
    if not settings.disable_aggregation:
        print(f"Metrics:  {settings.metrics_path}")
    code = collector.exit_code(metrics)
    if code and settings.require_complete and metrics["num_failed"] != metrics["num_attempted_this_run"]:
        print(f"error: {metrics['num_failed']} rollouts missing and +require_complete=true")
    elif code and settings.max_failures is not None and metrics["num_failed"] > settings.max_failures:
        print(
            f"error: {metrics['num_failed']} rollouts failed, more than +max_failures={settings.max_failures}"
        )
    elif code:
        print("error: every rollout failed")
    return code


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
