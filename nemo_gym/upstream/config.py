"""The keys that say how to reach a set of OpenAI-compatible upstreams, defined once.

The vLLM adapter's config extends this model, so its keys, defaults and validation live only
here and the pool reads them as they are (no second settings object to keep in step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nemo_gym.exceptions import check_header_value


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connect: float = Field(default=10.0, gt=0, description="Seconds to open a connection to an upstream.")
    read: float | None = Field(
        default=None,
        gt=0,
        description="Seconds without a byte of the answer before giving up (504). None: a generation "
        "may take as long as it takes.",
    )
    pool: float | None = Field(
        default=600.0,
        gt=0,
        description="Seconds a request may wait for a free pooled connection when all max_connections "
        "are busy (503). None: wait as long as it takes.",
    )


class ResponseLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest upstream response head (status line + headers)."
    )
    max_body_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Largest upstream response body, as received."
    )
    max_decompressed_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest upstream response body after gzip/deflate decoding (guards against "
        "compression bombs).",
    )


class UpstreamConfig(BaseModel):
    base_url: list[str] = Field(
        description="One or more upstream URLs ending in /v1 (a list, or comma-separated)."
    )
    api_key: str = Field(description="Sent as `authorization: Bearer <key>` unless it is EMPTY.")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: ResponseLimits = Field(default_factory=ResponseLimits)
    max_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries after a failure before any answer (connect errors, dropped connections, "
        "502/503/504), with exponential backoff.",
    )
    retry_backoff: float = Field(
        default=0.1, ge=0, description="First backoff in seconds; doubles per retry."
    )
    routing: Literal["round_robin", "hash"] = Field(
        default="round_robin", description="How new sessions are spread over upstreams."
    )
    max_sessions: int = Field(default=100_000, ge=1, description="Session pins remembered (LRU).")
    max_connections: int = Field(default=4096, ge=1, description="Open connections per upstream, at most.")
    upstream_client: Literal["auto", "lean", "aiohttp"] = Field(
        default="auto",
        description="HTTP client for upstreams. auto: the lean pooled client for http://, aiohttp "
        "(proxy variables, CA bundle, client certificates) for https://.",
    )
    ssl_verify: bool = Field(default=True, description="Verify https upstreams' certificates.")
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust for https upstreams.")
    client_cert: str | None = Field(default=None, description="PEM client certificate for https upstreams.")
    client_key: str | None = Field(default=None, description="Key of client_cert, if not in the same file.")

    @field_validator("base_url", mode="before")
    @classmethod
    def _split_base_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("needs at least one upstream URL")
            for url in value:
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise ValueError(
                        f"{url!r} is not an http(s) URL (expected e.g. http://127.0.0.1:8000/v1)"
                    )
                if any(c.isspace() or not c.isprintable() for c in url):
                    raise ValueError(f"{url!r} contains whitespace or control characters")
            return [u.rstrip("/") for u in value]
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_fits_in_a_header(cls, value: str) -> str:
        # Sent in the authorization header; the message must not repeat the secret.
        check_header_value("authorization", value)
        return value

    def auth_headers(self) -> dict[str, str]:
        if self.api_key and self.api_key != "EMPTY":
            return {"authorization": f"Bearer {self.api_key}"}
        return {}
