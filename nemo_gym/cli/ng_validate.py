"""`ng_validate`: check a config, an environment bundle or a manifest without starting anything.

    ng_validate "+config_paths=[...]"          # the config as ng_run would load it
    ng_validate +environment=NAME               # environments/NAME: its manifest and its config
    ng_validate +manifest_path=PATH             # one manifest (and the config it names)

A config that only lacks the model endpoint (`policy_base_url`, … with no env.yaml) still checks:
the missing values get stand-ins and a warning says the config will not start as it is;
`+strict=true` makes that an error. Every problem is one line naming the key and the file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from nemo_gym import catalog
from nemo_gym.cli.common import command_entry
from nemo_gym.cli.gym_options import merge_config_paths
from nemo_gym.cli.keys import closest, read_keys
from nemo_gym.cli.ng_run import RunKeys
from nemo_gym.config import ConfigError, discover_instances, load_config
from nemo_gym.config.instances import ServerInstance
from nemo_gym.environment.manifest import EnvironmentManifest, load_manifest, resolve_manifest_config_path

COMMAND = "ng_validate"
SUMMARY = "validate a config, an environment bundle or a manifest without starting anything."
# What a config leaves to the user's env.yaml; a run supplies them, a validation need not.
MODEL_STAND_INS = {
    "policy_base_url": "http://model-endpoint.invalid/v1",
    "policy_api_key": "unset",
    "policy_model_name": "unset",
}
# A config that leaves the model server to another file (`--model-type`) refers to this instance.
POLICY_MODEL = "policy_model"
STAND_IN_MODEL_SERVER = {"responses_api_models": {"vllm_model": {"entrypoint": "app.py"}}}


class ValidateKeys(RunKeys):
    """ng_run's keys (a config is checked as ng_run would load it) and what to validate."""

    environment: str | None = Field(None, description="An environment bundle (environments/NAME) to check.")
    manifest_path: str | None = Field(None, description="A manifest.yaml to check, with the config it names.")
    strict: bool = Field(False, description="Fail instead of warning when model endpoint values are unset.")
    json_format: bool = Field(False, alias="json", description="Print one JSON object.")


KEYS = ValidateKeys


def _bundle(name: str) -> catalog.Component:
    bundles = {
        n: c for n, c in catalog.discover("environments").items() if c.details.get("source") == "bundle"
    }
    if name not in bundles:
        guess = closest(name, bundles)
        hint = f"; did you mean `{guess}`?" if guess else ""
        raise ConfigError(f"no environment bundle is named {name!r}{hint}", key="environment")
    return bundles[name]


def _load(args: list[str], config_paths: list[str], strict: bool) -> tuple[list[ServerInstance], list[str]]:
    """The config's server instances, and warnings. Stand-ins for the model endpoint (and, if the
    config has none, a model server) are tried only when the config fails without them, and only
    an error they account for becomes a warning: any other error is reported as it is."""
    full = merge_config_paths(config_paths, args)
    try:
        return discover_instances(load_config(full)), []
    except ConfigError as error:
        if strict:
            raise
        for initial in (MODEL_STAND_INS, {**MODEL_STAND_INS, POLICY_MODEL: STAND_IN_MODEL_SERVER}):
            try:
                instances = discover_instances(load_config(full, initial=initial))
            except ConfigError:
                continue
            mine = [i for i in instances if not (POLICY_MODEL in initial and i.name == POLICY_MODEL)]
            return mine, [f"this config does not start as it is (run with +strict=true to fail): {error}"]
        raise error from None


def _manifest_summary(manifest: EnvironmentManifest, path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "name": manifest.name,
        "version": manifest.version,
        "kind": manifest.kind.value,
        "integration_profile": manifest.integration_profile.value,
        "datasets": [{"name": d.name, "type": d.type.value} for d in manifest.datasets],
    }


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, ValidateKeys, args)
    if keys.environment and keys.manifest_path:
        raise ConfigError("give an environment name or +manifest_path, not both", key="manifest_path")
    own = ("environment", "manifest_path", "strict", "json")
    passed = [a for a in args if a.lstrip("+").split("=", 1)[0] not in own]
    report: dict[str, Any] = {"valid": True, "warnings": []}
    config_paths: list[str] = []
    manifest_path: Path | None = None
    if keys.environment:
        bundle = _bundle(keys.environment)
        config_paths = [str(bundle.configs[0])]
        manifest_path = bundle.manifest
    elif keys.manifest_path:
        manifest_path = Path(keys.manifest_path)
    if manifest_path is not None:
        manifest = load_manifest(manifest_path)
        config = resolve_manifest_config_path(manifest_path, manifest)
        if not config.is_file():
            raise ConfigError(
                f"names {config}, which does not exist", key="config_path", source=str(manifest_path)
            )
        config_paths = config_paths or [str(config)]
        report["manifest"] = _manifest_summary(manifest, manifest_path)
    instances, warnings = _load(passed, config_paths, keys.strict)
    report["warnings"] = warnings
    report["instances"] = [
        {"name": i.name, "server_type": i.server_type, "implementation": i.implementation} for i in instances
    ]
    if keys.json_format:
        print(json.dumps(report))
        return 0
    if "manifest" in report:
        m = report["manifest"]
        print(f"✓ manifest {m['path']}: {m['name']} {m['version']} ({m['kind']}, {m['integration_profile']})")
        print("  datasets: " + ", ".join(f"{d['name']} ({d['type']})" for d in m["datasets"]))
    print(f"✓ config is valid: {len(instances)} server instances")
    for instance in instances:
        print(f"  {instance.name}: {instance.implementation}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
