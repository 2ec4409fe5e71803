"""How a server process learns its config: from `ng_run` (a private file) or from argv.

`ng_run` writes the resolved global config to a 0600 temp file and points children at
it with environment variables, so children need neither the network nor a re-parse of
the user's files (and see exactly what the parent validated).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_gym.config import ConfigError, LoadedConfig, ServerInstance, discover_instances, load_config
from nemo_gym.config.loader import source_of
from nemo_gym.config.redact import secret_values

CONFIG_FILE_VAR = "NEMO_GYM_CONFIG_FILE"
INSTANCE_VAR = "NEMO_GYM_INSTANCE_NAME"


@dataclass
class RuntimeContext:
    """Everything a server process needs to start."""

    global_config: dict[str, Any]
    origins: dict[str, str]
    instance_name: str
    session_secret: str
    secrets: set[str] = field(default_factory=set)

    def source_of(self, dotted_key: str) -> str | None:
        return source_of(self.origins, dotted_key)

    def instance_location(self) -> tuple[str, str, dict[str, Any]]:
        """(server_type, impl_name, impl config) of this process's instance."""
        value = self.global_config[self.instance_name]
        server_type = next(iter(value))
        impl_name = next(iter(value[server_type]))
        return server_type, impl_name, value[server_type][impl_name]


def write_runtime_file(loaded: LoadedConfig, session_secret: str) -> Path:
    """Write the config for children, readable by this user only."""
    from omegaconf import OmegaConf

    config: dict[str, Any] = OmegaConf.to_container(loaded.config, resolve=True)  # type: ignore[assignment]
    return _write_private_json(config, loaded.origins, session_secret)


def write_context_file(context: RuntimeContext) -> Path:
    """A runtime file for an already-loaded context (worker processes of a by-hand start)."""
    return _write_private_json(context.global_config, context.origins, context.session_secret)


def _write_private_json(global_config: dict[str, Any], origins: dict[str, str], session_secret: str) -> Path:
    # mkstemp creates the file with mode 0600: secrets in it stay readable by this user only.
    fd, path = tempfile.mkstemp(prefix="nemo_gym_config_", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(
            {"global_config": global_config, "origins": origins, "session_secret": session_secret}, handle
        )
    return Path(path)


def context_from_file(path: str, instance_name: str) -> RuntimeContext:
    payload = json.loads(Path(path).read_text())
    cfg = payload["global_config"]
    return RuntimeContext(
        global_config=cfg,
        origins=payload.get("origins", {}),
        instance_name=instance_name,
        session_secret=payload["session_secret"],
        secrets=secret_values(cfg),
    )


def _from_argv(argv: list[str], entrypoint: Path) -> RuntimeContext:
    """Run by hand: `python app.py "+config_paths=[…]" [+instance_name=x]`."""
    instance_arg = [a for a in argv if a.lstrip("+").startswith("instance_name=")]
    rest = [a for a in argv if a not in instance_arg]
    loaded = load_config(rest)
    instances = discover_instances(loaded)
    if instance_arg:
        wanted = instance_arg[0].split("=", 1)[1]
        matches = [i for i in instances if i.name == wanted]
    else:
        matches = [i for i in instances if i.entrypoint.resolve() == entrypoint.resolve()]
    if len(matches) != 1:
        names = ", ".join(i.name for i in matches) or "none"
        raise ConfigError(
            f"cannot tell which instance to run from {entrypoint} (matching instances: {names}); "
            "pass +instance_name=<name>",
            source="command line",
        )
    inst: ServerInstance = matches[0]
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(loaded.config, resolve=True)
    assert isinstance(cfg, dict)
    impl = cfg[inst.name][inst.server_type][inst.impl_name]
    impl.setdefault("host", inst.host)
    impl.setdefault("port", inst.port or 8000)
    return RuntimeContext(
        global_config=cfg,
        origins=loaded.origins,
        instance_name=inst.name,
        session_secret=secrets.token_hex(32),
        secrets=secret_values(cfg),
    )


def load_runtime_context(entrypoint: Path, argv: list[str] | None = None) -> RuntimeContext:
    path = os.environ.get(CONFIG_FILE_VAR)
    name = os.environ.get(INSTANCE_VAR)
    if path and name:
        return context_from_file(path, name)
    return _from_argv(list(sys.argv[1:] if argv is None else argv), entrypoint)
