"""Model-server side of NeMo Gym's observability: model-call capture and its records.

With `observability_enabled: true` and an absolute `model_call_capture_dir` in the running
config, a model server built on `SimpleResponsesAPIModel` (or any FastAPI app with
`install_model_call_capture`) appends every call made under a rollout path prefix
(`/ng-rollout/<rollout id>/v1/responses`, `/v1/chat/completions`) to
`<dir>/<rollout id>.capture.jsonl`: request, response, status, timing. Rollout collection then
folds a rollout's calls into its record as `ng_model_call_capture`
(`merge_model_call_capture_into_record`), from which the standard trajectory takes its model
calls and token counts.

Our own vLLM adapter does not capture (its hot path stays as it is); our simple_agent records
the model calls it makes itself. This module is what NeMo Gym model servers and agents import.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import time
import uuid
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson
from fastapi import Body, FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nemo_gym.config_types import ROLLOUT_PATH_PREFIX, TOKEN_CAPTURE_PATH_SEGMENT, ModelServerRef
from nemo_gym.http.bodies import json_object
from nemo_gym.rollout_correlation import maybe_rollout_id_from_run_body, rollout_context
from nemo_gym.rollout_observability import (
    AgentObservationBundle,
    ObservationGap,
    ResponseMetadataFields,
    join_model_call_observations,
)
from nemo_gym.server.base import BaseServerConfig, SimpleServer

logger = logging.getLogger(__name__)

_CAPTURED_PATHS = {
    "/v1/responses": "responses",
    "/v1/chat/completions": "chat_completions",
    "/v1/messages": "messages",
}
_PREFIXED = re.compile(
    rf"^/{re.escape(ROLLOUT_PATH_PREFIX)}/(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)"
    rf"(?:/{re.escape(TOKEN_CAPTURE_PATH_SEGMENT)})?(?P<rest>/.*)$"
)
_CLIENT_SESSION_HEADER = b"x-session-id"
_PAYLOAD_KEYS = ("request", "response", "request_raw", "response_raw")


# ---------------------------------------------------------------------------- model servers


class BaseResponsesAPIModelConfig(BaseServerConfig):
    # Successful routes whose answers hold no generated content (NeMo Gym's training-capture key).
    token_id_capture_non_generating_requests: list[Any] = Field(default_factory=list)


class BaseResponsesAPIModel(SimpleServer):
    config: BaseResponsesAPIModelConfig


class SimpleResponsesAPIModel(BaseResponsesAPIModel):
    """A model server: `/v1/responses` and `/v1/chat/completions`, with model-call capture
    installed when the running config enables observability."""

    non_generating_model_routes: ClassVar[frozenset[tuple[str, str]]] = frozenset()

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        config = ModelCallCaptureConfig.model_validate(_global_config_of(self.server_client))
        install_model_call_capture(app, config, model_server_name=self.config.name or None)
        app.post("/v1/responses")(self.responses)
        app.post("/v1/chat/completions")(self.chat_completions)
        return app

    @abstractmethod
    async def responses(self, body: Any = Body()) -> Any: ...

    @abstractmethod
    async def chat_completions(self, body: Any = Body()) -> Any: ...


def _global_config_of(server_client: Any) -> Mapping[str, Any]:
    for attribute in ("global_config", "global_config_dict"):
        config = getattr(server_client, attribute, None)
        if isinstance(config, Mapping):
            return config
    return {}


# ---------------------------------------------------------------------------- capture storage


class ModelCallCaptureConfig(BaseModel):
    """The run-wide capture keys of the global config.

    Unlike NeMo Gym, observability may be on without a capture directory: our agents record the
    model calls they make themselves, so only model servers that capture need the directory.
    """

    model_config = ConfigDict(extra="ignore")

    observability_enabled: bool = False
    model_call_capture_dir: Path | None = None

    @model_validator(mode="after")
    def _absolute_dir(self) -> ModelCallCaptureConfig:
        if self.model_call_capture_dir is not None and not self.model_call_capture_dir.is_absolute():
            raise ValueError(f"model_call_capture_dir must be absolute, not {self.model_call_capture_dir}")
        return self


def _checked_rollout_id(rollout_id: str) -> str:
    if not rollout_id or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in rollout_id):
        raise ValueError(f"invalid rollout id: {rollout_id!r}")
    return rollout_id


class CaptureStore:
    """One append-only JSONL file per rollout; appends are locked (several workers may write)
    and synced. Blocking file IO: call it off the event loop."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, rollout_id: str) -> Path:
        return self._root / f"{_checked_rollout_id(rollout_id)}.capture.jsonl"

    def incomplete_path_for(self, rollout_id: str) -> Path:
        return self._root / f"{_checked_rollout_id(rollout_id)}.capture.incomplete"

    def mark_incomplete(self, rollout_id: str) -> None:
        self.incomplete_path_for(rollout_id).touch(exist_ok=True)

    def is_incomplete(self, rollout_id: str) -> bool:
        return self.incomplete_path_for(rollout_id).exists()

    def record(self, rollout_id: str, exchange: dict[str, Any]) -> None:
        line = orjson.dumps(exchange, default=str, option=orjson.OPT_APPEND_NEWLINE)
        with self.path_for(rollout_id).open("ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def read_available(self, rollout_id: str) -> tuple[list[tuple[int, dict[str, Any]]], int]:
        """(index, exchange) of every readable line, and how many lines could not be read."""
        path = self.path_for(rollout_id)
        if not path.exists():
            return [], 0
        exchanges: list[tuple[int, dict[str, Any]]] = []
        unreadable = 0
        with path.open("rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                lines = [line.strip() for line in handle if line.strip()]
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        for index, line in enumerate(lines):
            try:
                exchange = orjson.loads(line)
            except orjson.JSONDecodeError:
                unreadable += 1
                continue
            if isinstance(exchange, dict):
                exchanges.append((index, exchange))
            else:
                unreadable += 1
        return exchanges, unreadable

    def read(self, rollout_id: str) -> list[dict[str, Any]]:
        exchanges, unreadable = self.read_available(rollout_id)
        if unreadable:
            raise ValueError(f"{unreadable} line(s) of {self.path_for(rollout_id)} are not JSON objects")
        return [exchange for _, exchange in exchanges]


def make_capture_store(config: ModelCallCaptureConfig) -> CaptureStore | None:
    if not config.observability_enabled or config.model_call_capture_dir is None:
        return None
    return CaptureStore(config.model_call_capture_dir)


# ---------------------------------------------------------------------------- records


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _detail(usage: Mapping[str, Any], groups: tuple[str, ...], names: tuple[str, ...]) -> int | None:
    for group in groups:
        details = usage.get(group)
        if isinstance(details, Mapping):
            for name in names:
                value = _count(details.get(name))
                if value is not None:
                    return value
    return None


def extract_token_stats(usage: Any) -> dict[str, int | None]:
    """Token totals from Responses, Chat Completions or Anthropic usage.

    Anthropic's `input_tokens` excludes cache reads and writes, so those are added back to get
    the prompt size (OpenAI-style counts already include cached tokens).
    """
    stats: dict[str, int | None] = dict.fromkeys(
        ("tokens_in", "tokens_out", "tokens_reasoning", "tokens_total", "cache_creation_tokens")
    )
    if not isinstance(usage, Mapping):
        return stats
    tokens_in = _count(usage.get("input_tokens"))
    if tokens_in is None:
        tokens_in = _count(usage.get("prompt_tokens"))
    tokens_out = _count(usage.get("output_tokens"))
    if tokens_out is None:
        tokens_out = _count(usage.get("completion_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    cache_creation = _count(usage.get("cache_creation_input_tokens"))
    if cache_read is not None or cache_creation is not None:
        cached = (cache_read or 0) + (cache_creation or 0)
        if tokens_in is not None or cached > 0:
            tokens_in = (tokens_in or 0) + cached
    total = _count(usage.get("total_tokens"))
    if total is None and tokens_in is not None and tokens_out is not None:
        total = tokens_in + tokens_out
    reasoning = _detail(usage, ("output_tokens_details", "completion_tokens_details"), ("reasoning_tokens",))
    if reasoning is None:
        reasoning = _count(usage.get("reasoning_output_tokens"))
    stats.update(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens_reasoning=reasoning,
        tokens_total=total,
        cache_creation_tokens=cache_creation,
    )
    return stats


def _cache_signal(usage: Any) -> tuple[bool | None, int | None]:
    if not isinstance(usage, Mapping):
        return None, None
    cached = _detail(
        usage, ("prompt_tokens_details", "input_tokens_details"), ("cached_tokens", "cached_input_tokens")
    )
    if cached is None:
        cached = _count(usage.get("cache_read_input_tokens"))
    if cached is None:
        cached = _count(usage.get("cached_input_tokens"))
    return (None, None) if cached is None else (cached > 0, cached)


def _arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {"_raw": arguments}
        return parsed if isinstance(parsed, dict) else {"_raw": arguments}
    return {}


def _tool_calls_and_reasoning(response: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Tool calls (call_id, name, arguments) and reasoning text, in any of the three dialects."""
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    output = response.get("output")
    if isinstance(output, list):
        _from_responses_output(output, calls, reasoning)
    elif isinstance(response.get("choices"), list):
        _from_chat_choices(response["choices"], calls, reasoning)
    elif isinstance(response.get("content"), list):
        _from_anthropic_content(response["content"], calls, reasoning)
    return calls, "\n".join(reasoning) or None


def _from_responses_output(output: list[Any], calls: list[dict[str, Any]], reasoning: list[str]) -> None:
    for item in (i for i in output if isinstance(i, dict)):
        if item.get("type") == "function_call":
            calls.append(
                {
                    "call_id": item.get("call_id") or item.get("id"),
                    "name": item.get("name"),
                    "arguments": _arguments(item.get("arguments")),
                }
            )
        elif item.get("type") == "reasoning":
            reasoning.extend(
                s["text"]
                for s in item.get("summary") or []
                if isinstance(s, dict) and isinstance(s.get("text"), str) and s["text"]
            )


def _from_chat_choices(choices: list[Any], calls: list[dict[str, Any]], reasoning: list[str]) -> None:
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, Mapping):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
                calls.append(
                    {
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": _arguments(function.get("arguments")),
                    }
                )
        text = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(text, str) and text:
            reasoning.append(text)


def _from_anthropic_content(content: list[Any], calls: list[dict[str, Any]], reasoning: list[str]) -> None:
    for block in (b for b in content if isinstance(b, dict)):
        if block.get("type") == "tool_use":
            calls.append(
                {"call_id": block.get("id"), "name": block.get("name"), "arguments": block.get("input") or {}}
            )
        elif block.get("type") in ("thinking", "redacted_thinking") and isinstance(
            block.get("thinking"), str
        ):
            reasoning.append(block["thinking"])


class ModelCallRecord(ResponseMetadataFields):
    """One captured model call, as observability reads it."""

    model_call_id: str | None = None
    # What the client said its session was (an `X-Session-Id` header): evidence, not identity.
    client_session_id: str | None = None
    # Position in the capture file (append order, not causal order).
    call_index: int
    started_at: float | None = None
    completed_at: float | None = None
    # Latencies and counts: None means unknown, never zero.
    latency_total_ms: float | None = Field(default=None, ge=0)
    latency_ttft_ms: float | None = Field(default=None, ge=0)
    tokens_in: int | None = Field(default=None, ge=0)
    tokens_out: int | None = Field(default=None, ge=0)
    tokens_reasoning: int | None = Field(default=None, ge=0)
    tokens_total: int | None = Field(default=None, ge=0)
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    request_raw: str | None = None
    response_raw: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    reasoning_content: str | None = None
    cache_hit: bool | None = None
    cached_tokens: int | None = Field(default=None, ge=0)
    cache_creation_tokens: int | None = Field(default=None, ge=0)


def build_model_call_record(exchange: dict[str, Any], *, call_index: int) -> ModelCallRecord:
    raw_response, raw_request = exchange.get("response"), exchange.get("request")
    response = raw_response if isinstance(raw_response, dict) else {}
    request = raw_request if isinstance(raw_request, dict) else {}
    tool_calls, reasoning = _tool_calls_and_reasoning(response)
    cache_hit, cached_tokens = _cache_signal(response.get("usage"))
    choices = response.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    incomplete = (
        response.get("incomplete_details") if isinstance(response.get("incomplete_details"), dict) else {}
    )
    finish_reason = next(
        (
            value
            for value in (response.get("stop_reason"), first.get("finish_reason"), incomplete.get("reason"))
            if isinstance(value, str)
        ),
        None,
    )
    model = response.get("model") or request.get("model")

    def text(key: str) -> str | None:
        value = exchange.get(key)
        return value if isinstance(value, str) else None

    return ModelCallRecord(
        model_call_id=exchange.get("model_call_id"),
        response_id=response.get("id") if isinstance(response.get("id"), str) else None,
        client_session_id=text("client_session_id"),
        call_index=call_index,
        model_ref=exchange.get("model_ref"),
        model=model if isinstance(model, str) else None,
        dialect=exchange.get("dialect"),
        status_code=exchange.get("status_code"),
        response_status=response.get("status") if isinstance(response.get("status"), str) else None,
        finish_reason=finish_reason,
        upstream_attempted=exchange.get("upstream_attempted"),
        response_source=exchange.get("response_source"),
        upstream_status_code=exchange.get("upstream_status_code"),
        local_response_reason=exchange.get("local_response_reason"),
        started_at=exchange.get("started_at"),
        completed_at=exchange.get("completed_at"),
        request=raw_request if isinstance(raw_request, dict) else None,
        response=raw_response if isinstance(raw_response, dict) else None,
        request_raw=text("request_raw"),
        response_raw=text("response_raw"),
        tool_calls=tool_calls,
        reasoning_content=reasoning,
        cache_hit=cache_hit,
        cached_tokens=cached_tokens,
        error_category=exchange.get("error_category"),
        latency_total_ms=exchange.get("latency_ms"),
        latency_ttft_ms=exchange.get("latency_ttft_ms"),
        **extract_token_stats(response.get("usage")),
    )


def read_model_call_records(store: CaptureStore, rollout_id: str) -> list[ModelCallRecord]:
    return [build_model_call_record(e, call_index=i) for i, e in enumerate(store.read(rollout_id))]


def read_available_model_call_records(
    store: CaptureStore, rollout_id: str
) -> tuple[list[ModelCallRecord], int]:
    """The records that could be read, and how many could not."""
    exchanges, unreadable = store.read_available(rollout_id)
    records = []
    for index, exchange in exchanges:
        try:
            records.append(build_model_call_record(exchange, call_index=index))
        except Exception:
            unreadable += 1
    return records, unreadable


def aggregate_model_call_records(calls: list[ModelCallRecord]) -> dict[str, Any]:
    def total(attribute: str) -> float | None:
        values = [getattr(call, attribute) for call in calls if getattr(call, attribute) is not None]
        return sum(values) if values else None

    return {
        "tokens_in": total("tokens_in"),
        "tokens_out": total("tokens_out"),
        "tokens_reasoning": total("tokens_reasoning"),
        "tokens_total": total("tokens_total"),
        "cached_tokens": total("cached_tokens"),
        "latency_total_ms": total("latency_total_ms"),
        "num_calls": len(calls),
    }


def aggregate_model_call_metrics(store: CaptureStore, rollout_id: str) -> dict[str, Any]:
    return aggregate_model_call_records(read_model_call_records(store, rollout_id))


# ---------------------------------------------------------------------------- capture middleware


class _CaptureMiddleware:
    """Strips `/ng-rollout/<id>[/training-token-capture]` from a path (serving it under
    `rollout_context(<id>)`) and, with a store, records the calls to the model routes."""

    def __init__(self, app: Any, *, store: CaptureStore | None, model_server_name: str | None) -> None:
        self.app = app
        self.store = store
        self.model_server_name = model_server_name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = _PREFIXED.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        rollout_id, rest = found.group("id"), found.group("rest")
        inner = dict(scope, path=rest, raw_path=rest.encode())
        dialect = _CAPTURED_PATHS.get(rest)
        with rollout_context(rollout_id):
            if self.store is None or dialect is None or scope.get("method") != "POST":
                await self.app(inner, receive, send)
                return
            await self._captured(inner, receive, send, rollout_id, dialect)

    async def _captured(
        self, scope: dict[str, Any], receive: Any, send: Any, rollout_id: str, dialect: str
    ) -> None:
        request_body = bytearray()
        response_body = bytearray()
        status: list[int] = []
        started_at, started = time.time(), time.perf_counter()
        first_byte: list[float] = []

        async def receive_copy() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                request_body.extend(message.get("body", b""))
            return message

        async def send_copy(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                if not first_byte:
                    first_byte.append(time.perf_counter())
                response_body.extend(message.get("body", b""))
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive_copy, send_copy)
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            session = next(
                (v.decode() for k, v in scope.get("headers", []) if k == _CLIENT_SESSION_HEADER), None
            )
            exchange = self._exchange(
                dialect,
                bytes(request_body),
                bytes(response_body),
                status[0] if status else None,
                error,
                session,
            )
            exchange.update(
                started_at=started_at,
                completed_at=time.time(),
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                latency_ttft_ms=round((first_byte[0] - started) * 1000, 2) if first_byte else None,
            )
            await asyncio.to_thread(self._write, rollout_id, exchange)

    def _exchange(
        self,
        dialect: str,
        request: bytes,
        response: bytes,
        status: int | None,
        error: str | None,
        session: str | None,
    ) -> dict[str, Any]:
        exchange: dict[str, Any] = {
            "model_call_id": f"model-call-{uuid.uuid4().hex}",
            "dialect": dialect,
            "model_ref": {"type": "responses_api_models", "name": self.model_server_name}
            if self.model_server_name
            else None,
            "status_code": status,
            "error_category": error or (f"http_{status}" if status is not None and status >= 400 else None),
        }
        if session is not None:
            exchange["client_session_id"] = session
        for key, raw in (("request", request), ("response", response)):
            parsed = json_object(raw)
            if parsed is not None:
                exchange[key] = parsed
            elif raw:
                exchange[f"{key}_raw"] = raw.decode("utf-8", errors="replace")  # a stream, or not JSON
        return exchange

    def _write(self, rollout_id: str, exchange: dict[str, Any]) -> None:
        assert self.store is not None
        try:
            self.store.record(rollout_id, exchange)
        except Exception:
            logger.warning("could not capture a model call of rollout %s", rollout_id, exc_info=True)
            try:
                self.store.mark_incomplete(rollout_id)
            except Exception:
                logger.warning(
                    "could not mark the capture of rollout %s incomplete", rollout_id, exc_info=True
                )


def install_model_call_capture(
    app: Any,
    config: ModelCallCaptureConfig,
    *,
    model_server_name: str | None = None,
    global_config_dict: Any = None,
    num_workers: int | None = None,
    non_generating_requests: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Serve `/ng-rollout/<id>/…` paths as `/…`, capturing model calls when `config` enables it.

    Training-token capture (NeMo Gym's `token_id_capture` sinks) is not implemented: our
    adapter returns token ids inline on every response instead.
    """
    app.add_middleware(
        _CaptureMiddleware, store=make_capture_store(config), model_server_name=model_server_name
    )


# ---------------------------------------------------------------------------- collection side


def model_call_capture_dirs_from_config(global_config_dict: Any) -> list[Path]:
    config = ModelCallCaptureConfig.model_validate(dict(global_config_dict))
    return (
        [config.model_call_capture_dir]
        if config.observability_enabled and config.model_call_capture_dir
        else []
    )


def observability_enabled_from_config(global_config_dict: Any) -> bool:
    """The run's `observability_enabled` flag."""
    return bool(dict(global_config_dict).get("observability_enabled", False))


def _store_with(rollout_id: str, capture_dirs: list[Path]) -> CaptureStore | None:
    for directory in capture_dirs:
        store = CaptureStore(directory)
        if store.path_for(rollout_id).exists() or store.is_incomplete(rollout_id):
            return store
    return None


def clear_model_call_captures_for_rollouts(records: list[Any], capture_dirs: list[Path]) -> None:
    """Drop earlier captures of these rollouts' ids before they are dispatched again."""
    for directory in capture_dirs:
        store = CaptureStore(directory)
        for record in records:
            rollout_id = maybe_rollout_id_from_run_body(record)
            if rollout_id:
                store.path_for(rollout_id).unlink(missing_ok=True)
                store.incomplete_path_for(rollout_id).unlink(missing_ok=True)


def _with_claude_code_compactions(
    bundle: AgentObservationBundle, calls: list[ModelCallRecord], rollout_id: str
) -> AgentObservationBundle:
    """NeMo Gym's Claude Code agent attributes its compaction calls itself (its own module does it)."""
    try:
        from responses_api_agents.claude_code_agent.observability import (
            associate_claude_code_compaction_calls,
        )

        return associate_claude_code_compaction_calls(bundle, calls)
    except Exception:
        logger.warning(
            "could not attribute the Claude Code compaction calls of rollout %s", rollout_id, exc_info=True
        )
        bundle.gaps.append(ObservationGap(code="compaction_model_call_join_failed"))
        return bundle


def _read_capture(
    rollout_id: str, capture_dirs: list[Path]
) -> tuple[list[ModelCallRecord], list[ObservationGap]]:
    """The rollout's captured calls, and what kept any from being read, as gaps."""
    store = _store_with(rollout_id, capture_dirs)
    if store is None:
        return [], [ObservationGap(code="model_call_capture_no_records")]
    gaps: list[ObservationGap] = []
    try:
        calls, unreadable = read_available_model_call_records(store, rollout_id)
    except Exception:
        logger.warning("could not read the model-call capture of rollout %s", rollout_id, exc_info=True)
        return [], [ObservationGap(code="model_call_capture_unreadable")]
    if unreadable:
        gaps.append(
            ObservationGap(code="model_call_capture_records_unreadable", detail=f"count={unreadable}")
        )
    if store.is_incomplete(rollout_id):
        gaps.append(ObservationGap(code="model_call_capture_incomplete"))
    elif not calls and not unreadable:
        gaps.append(ObservationGap(code="model_call_capture_no_records"))
    return calls, gaps


def merge_model_call_capture_into_record(
    record: dict[str, Any], capture_dirs: list[Path], *, include_payloads: bool = False
) -> dict[str, Any]:
    """Add `ng_model_call_capture = {rollout_id, metrics, calls[, gaps]}` to a record, in place.

    The rollout id comes from the record; problems reading the capture become gaps, never
    errors, and the record's own output and reward are untouched. Agent observations on the
    record get their model-call references joined to the captured calls. Payloads (request and
    response bodies) stay in the store unless `include_payloads`.
    """
    if not capture_dirs:
        return record
    rollout_id = maybe_rollout_id_from_run_body(record)
    if rollout_id is None:
        return record
    calls, gaps = _read_capture(rollout_id, capture_dirs)
    observations = record.get("ng_agent_observations")
    if observations is not None:
        try:
            bundle = AgentObservationBundle.model_validate(observations)
            if bundle.source == "claude_code":
                bundle = _with_claude_code_compactions(bundle, calls, rollout_id)
            bundle = join_model_call_observations(bundle, calls)
            record["ng_agent_observations"] = bundle.model_dump(mode="json")
        except Exception:
            logger.warning("could not join the agent observations of rollout %s", rollout_id, exc_info=True)
            gaps.append(ObservationGap(code="agent_observation_join_failed"))
    exclude = None if include_payloads else set(_PAYLOAD_KEYS)
    capture: dict[str, Any] = {
        "rollout_id": rollout_id,
        "metrics": aggregate_model_call_records(calls),
        "calls": [call.model_dump(exclude=exclude) for call in calls],
    }
    if gaps:
        capture["gaps"] = [gap.model_dump(mode="json", exclude_none=True) for gap in gaps]
    record["ng_model_call_capture"] = capture
    return record


__all__ = [
    "BaseResponsesAPIModel",
    "BaseResponsesAPIModelConfig",
    "CaptureStore",
    "ModelCallCaptureConfig",
    "ModelCallRecord",
    "ModelServerRef",
    "SimpleResponsesAPIModel",
    "aggregate_model_call_metrics",
    "aggregate_model_call_records",
    "build_model_call_record",
    "clear_model_call_captures_for_rollouts",
    "extract_token_stats",
    "install_model_call_capture",
    "make_capture_store",
    "merge_model_call_capture_into_record",
    "model_call_capture_dirs_from_config",
    "observability_enabled_from_config",
    "read_available_model_call_records",
    "read_model_call_records",
]
