"""A small client for OpenAI-compatible endpoints (judges, external models): NeMo Gym's
`NeMoGymAsyncOpenAI`, on the shared aiohttp pool of `nemo_gym.http.server_client`.

Its retry rules are NeMo Gym's, through the one retry policy (`nemo_gym.http.retry`):
`RETRY_ERROR_CODES` are retried until `max_http_attempts` tries, `retry_sleep_seconds` apart
(for `internal` endpoints, ours, a rate limit does not use up a try); connection failures are
retried until `max_connection_retries` (no limit by default); a spent or refused key stops the
client for good (`PermanentEndpointError`), since sending again can only fail again. Each retry
is logged and counted by reason (`retries`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, Field, PrivateAttr

from nemo_gym.exceptions import ServerCallError, error_body_of
from nemo_gym.http.retry import RATE_LIMIT_STATUSES, RETRY_STATUSES, RetryPolicy
from nemo_gym.http.server_client import raise_for_status, request

logger = logging.getLogger("nemo_gym.http.openai_client")

# NeMo Gym's names for the statuses `nemo_gym.http.retry` defines.
RATE_LIMIT_ERROR_CODES = list(RATE_LIMIT_STATUSES)
RETRY_ERROR_CODES = list(RETRY_STATUSES)
# Error codes that mean the key is spent or invalid: retrying will never help.
PERMANENT_QUOTA_CODES = ("budget_exceeded", "insufficient_quota")
PERMANENT_AUTH_CODES = ("invalid_api_key", "invalid_api_token", "authentication_error")
MAX_NUM_TRIES = 3


def _error_tokens(body: bytes) -> set[str]:
    """The error's code and type, lower case (or its text, when it has neither)."""
    try:
        error = error_body_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return set()
    if error is None:
        return set()
    named = [value for value in (error.code, error.type) if value is not None]
    return {str(value).lower() for value in named or [error.message]}


def _is_permanent(status: int, body: bytes) -> bool:
    if status == 429:
        return not _error_tokens(body).isdisjoint(PERMANENT_QUOTA_CODES)
    if status in (401, 403):
        if not _error_tokens(body).isdisjoint(PERMANENT_AUTH_CODES):
            return True
        text = body.decode("utf-8", errors="replace").lower()
        return "invalid api key" in text or "incorrect api key" in text
    return False


class PermanentEndpointError(ServerCallError):
    """The endpoint's key is spent or unauthorized; this client no longer sends requests."""

    def __init__(self, status: int, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response_content = body


class NeMoGymAsyncOpenAI(BaseModel):
    """A thin aiohttp client for an OpenAI-compatible endpoint; methods return parsed JSON dicts."""

    base_url: str
    api_key: str
    internal: bool = Field(
        default=False, description="Internal NeMo Gym servers: retry rate limits indefinitely."
    )
    max_connection_retries: int | None = None
    max_http_attempts: int = Field(default=MAX_NUM_TRIES, ge=1)
    default_headers: dict[str, str] = Field(default_factory=dict)
    retry_sleep_seconds: float = 0.5

    _tripped_state: tuple[int, bytes, str] | None = PrivateAttr(default=None)
    _retries: Counter[str] = PrivateAttr(default_factory=Counter)

    @property
    def retries(self) -> Counter[str]:
        """Retries made, by reason (`status_503`, `connection`)."""
        return self._retries

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(
            frozenset(RETRY_STATUSES),
            self.max_http_attempts - 1,
            self.retry_sleep_seconds,
            exponential=False,
            logger=logger,
            counts=self._retries,
        )

    def _check_tripped(self) -> None:
        tripped = self._tripped_state
        if tripped is not None:
            status, body, url = tripped
            raise PermanentEndpointError(
                status,
                f"Skipping further requests to {self.base_url}: HTTP {status} is permanent (url={url})",
                body,
            )

    async def _send(self, method: str, url: str, json: Any = None) -> Any:
        headers = {**self.default_headers, "Authorization": f"Bearer {self.api_key}"}
        policy = self._policy()
        what = f"{method} {url}"
        limit = self.max_http_attempts
        attempt = 0
        connection_failures = 0
        while True:
            self._check_tripped()
            try:
                response = await request(method, url, json=json, headers=headers)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                connection_failures += 1
                most = self.max_connection_retries
                if most is not None and connection_failures > most:
                    raise
                policy.record(
                    "connection", what, connection_failures, exc, "unlimited" if most is None else most
                )
                await asyncio.sleep(policy.delay(connection_failures))
                continue
            attempt += 1
            status = response.status
            if status < 400:
                return orjson.loads(await response.read())
            body = await response.read()
            if _is_permanent(status, body):
                self._tripped_state = (status, body, url)
                self._check_tripped()
            if status not in policy.statuses:
                await raise_for_status(response, body)
            if self.internal and status in RATE_LIMIT_STATUSES:
                limit += 1
            if attempt >= limit:
                await raise_for_status(response, body)
            detail = f"HTTP {status}: {body.decode('utf-8', errors='replace')[:200]}"
            policy.record(f"status_{status}", what, attempt, detail, limit - 1)
            await asyncio.sleep(policy.delay(attempt))

    async def create_models(self) -> Any:
        return await self._send("GET", f"{self.base_url}/models")

    async def create_chat_completion(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/chat/completions", kwargs)

    async def create_completion(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/completions", kwargs)

    async def create_response(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/responses", kwargs)

    async def create_tokenize(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url.removesuffix('/v1')}/tokenize", kwargs)
