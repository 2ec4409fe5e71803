"""How a component that did not create a sandbox is told to reach it (a serializable record)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue


class DirectSandboxConnection(BaseModel):
    """Rebuild the provider from the named top-level sandbox config block, then
    `AsyncSandbox.connect(descriptor, provider=...)`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["direct"] = "direct"
    provider_config_ref: str
    descriptor: dict[str, JsonValue]


class SandboxAccess(BaseModel):
    """A borrowed sandbox: how to connect to it and the directory to work in. The owner stops it."""

    model_config = ConfigDict(extra="forbid")

    connection: DirectSandboxConnection
    workdir: str
