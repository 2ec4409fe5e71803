"""How an agent reaches the tools of one episode, as an environment server grants them.

A grant is either direct HTTP (POST `<base_url>/<tool name>` with the given cookies and
headers, as a trusted Python agent calls a resources server) or an MCP server over streamable
HTTP. Grant names are unique within a session; a `required` grant that cannot be used fails
the session's seeding, an optional one may be skipped.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AnyHttpUrl, Field

from nemo_gym.episode_types import ClosedModel

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _ToolGrant(ClosedModel):
    """What every grant carries: its kind (the union's tag), its unique name and whether seeding
    must fail when it cannot be used."""

    kind: str
    name: str = Field(min_length=1, pattern=_NAME_PATTERN)
    required: bool


class DirectHTTPToolAccess(_ToolGrant):
    """Typed tool routes of a resources server, called directly."""

    kind: Literal["direct_http"] = "direct_http"
    base_url: AnyHttpUrl
    cookies: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)


class MCPStreamableHTTPConnection(ClosedModel):
    """An MCP endpoint at an absolute URL."""

    transport: Literal["streamable_http"] = "streamable_http"
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)


class MCPToolAccess(_ToolGrant):
    """One named MCP server the agent configures for the session (and disconnects at close)."""

    kind: Literal["mcp"] = "mcp"
    connection: MCPStreamableHTTPConnection


ToolAccess = Annotated[DirectHTTPToolAccess | MCPToolAccess, Field(discriminator="kind")]


def _unique_names(grants: list[ToolAccess]) -> list[ToolAccess]:
    names = [grant.name for grant in grants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"tool access names must be unique; repeated: {', '.join(repeated)}")
    return grants


# The grants of an agent's config or of one session: a name is given once, since a session's
# grants replace the configured ones by name.
ToolAccessList = Annotated[list[ToolAccess], AfterValidator(_unique_names)]

__all__ = [
    "DirectHTTPToolAccess",
    "MCPStreamableHTTPConnection",
    "MCPToolAccess",
    "ToolAccess",
    "ToolAccessList",
]
