"""`ng_collect_rollouts +agent_name=… +input_jsonl_fpath=… +output_jsonl_fpath=… [options]`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from nemo_gym.cli.common import run_cli
from nemo_gym.cli.keys import ConfigCommandKeys, check_command_line, validate_keys
from nemo_gym.config import ConfigError, load_config
from nemo_gym.http.server_client import HeadServerUnreachable, ServerClient, close_shared_client
from nemo_gym.rollouts.collect import CollectSettings, RolloutCollector, read_input_rows, resolve_agent

COMMAND = "ng_collect_rollouts"
SUMMARY = "run each input row through an agent's /run and write scored rollouts as they finish."


class CollectRolloutsKeys(ConfigCommandKeys):
    """ng_collect_rollouts' keys, NeMo Gym 0.7.0's names plus our aliases."""

    agent_name: str | None = Field(
        None, description="Agent instance to send every row to; without it, each row's agent_ref routes it."
    )
    input_jsonl_fpath: str | None = Field(
        None, description="Input JSONL; each row has responses_create_params plus any extra keys. Required."
    )
    output_jsonl_fpath: str | None = Field(
        None, description="Output JSONL, appended as each rollout finishes. Required."
    )
    limit: int | None = Field(None, ge=0, description="Use only the first N input rows.")
    num_repeats: int = Field(1, ge=1, description="Rollouts per input row.")
    num_samples_in_parallel: int | None = Field(
        None, ge=1, description="Most rollouts in flight at once (NeMo Gym's name for concurrency)."
    )
    concurrency: int | None = Field(None, ge=1, description="Alias of num_samples_in_parallel; default 32.")
    responses_create_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Responses fields merged into every row's request (e.g. temperature).",
    )
    resume_from_cache: bool = Field(
        False, description="Skip rollouts already in the output; without it an existing output is cleared."
    )
    resume: bool = Field(False, description="Alias of resume_from_cache.")
    max_failures: int | None = Field(
        None, ge=0, description="Exit non-zero when more rollouts than this fail (default: only if all fail)."
    )
    agent_map: dict[str, str] = Field(
        default_factory=dict,
        description="Re-route rows by their agent_ref name ({old: new}); key _default applies to every other row.",
    )
    interleave_repeats: bool = Field(
        False,
        description="Start repeats round by round (abcabc) instead of each row's back to back (aabbcc).",
    )
    disable_aggregation: bool = Field(
        False, description="Write no aggregate-metrics file and call no /aggregate_metrics (sharded runs)."
    )
    require_complete: bool = Field(False, description="Exit non-zero if any rollout is missing (failed).")


def _routing_check(settings: CollectSettings, client: ServerClient) -> None:
    """Every agent a run will call must exist before the first rollout, not as N failures later."""
    names: set[str] = set()
    missing = []
    for item in read_input_rows(settings.input_path, settings.limit):
        if item.row is None:
            continue
        name = resolve_agent(settings, item.row)
        if name:
            names.add(name)
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


def settings_from(cfg: dict[str, Any]) -> tuple[CollectRolloutsKeys, CollectSettings]:
    keys = validate_keys(CollectRolloutsKeys, cfg)
    assert isinstance(keys, CollectRolloutsKeys)
    for key in ("input_jsonl_fpath", "output_jsonl_fpath"):
        if not getattr(keys, key):
            raise ConfigError(f"is required (+{key}=...)", key=key, source="command line")
    input_path = Path(str(keys.input_jsonl_fpath))
    if not input_path.is_file():
        raise ConfigError(
            f"input file {input_path} does not exist", key="input_jsonl_fpath", source="command line"
        )
    settings = CollectSettings(
        agent_name=keys.agent_name,
        input_path=input_path,
        output_path=Path(str(keys.output_jsonl_fpath)),
        limit=keys.limit,
        concurrency=keys.concurrency or keys.num_samples_in_parallel or 32,
        num_repeats=keys.num_repeats,
        overrides=keys.responses_create_params,
        resume=keys.resume_from_cache or keys.resume,
        max_failures=keys.max_failures,
        agent_map=keys.agent_map,
        interleave_repeats=keys.interleave_repeats,
        disable_aggregation=keys.disable_aggregation,
        require_complete=keys.require_complete,
    )
    return keys, settings


def main(args: list[str]) -> int:
    from omegaconf import OmegaConf

    check_command_line(COMMAND, CollectRolloutsKeys, args)
    loaded = load_config(args)
    cfg: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    keys, settings = settings_from(cfg)
    try:
        client = ServerClient.load_from_global_config(dict(cfg["head_server"]))
    except HeadServerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _routing_check(settings, client)
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


def cli() -> None:
    run_cli(main, command=COMMAND, summary=SUMMARY, keys=CollectRolloutsKeys)


if __name__ == "__main__":
    cli()
