"""Every error nemo_gym raises on purpose, in one tree; the one place they become HTTP answers
(`api_error_for`), and the one reader of OpenAI-style error bodies (`parse_error_body`).

    NemoGymError
    ├── APIError                 an answer to our caller: status, message, type, param, code
    │   ├── UpstreamError        the upstream's own error answer, its status and message kept
    │   │   └── ContextLengthExceeded   the prompt does not fit: callers return an empty result
    │   └── InternalError        any other failure reaching a caller: a 500 naming its kind (the
    │                            traceback goes to the log only)
    ├── ConversionError          the caller sent something we cannot convert (400, names the field)
    ├── UpstreamFormatError      the upstream answered with something we cannot use (502)
    ├── TransportError           talking to an upstream failed below HTTP
    │   ├── NotSent              the request never reached a server: safe to send anywhere
    │   │   ├── ConnectError     refused, unreachable, DNS, TLS handshake
    │   │   ├── ConnectTimeout   no connection within timeouts.connect
    │   │   ├── PoolTimeout      no free pooled connection within timeouts.pool
    │   │   └── ClientClosed     the transport was closed (a shutdown)
    │   ├── StaleConnection      a reused keep-alive connection the server had just closed: it
    │   │                        failed on write, or closed within moments of it with no answer
    │   ├── ConnectionDropped    closed with no answer byte in any other case: the upstream may
    │   │                        have been working on it, so it is an upstream failure
    │   ├── ReadTimeout          no answer within timeouts.read: the generation may still run
    │   └── ProtocolError        the answer started but broke off, or is not valid HTTP
    │       └── ResponseTooLarge an answer over a configured limit (head, body, decompressed)
    ├── HeaderValueError         a configured header value holds CR, LF or NUL
    ├── ServerCallError          a call to another server (ours, or an OpenAI-compatible endpoint) failed
    │   ├── HeadServerUnreachable   the head server did not answer (is ng_run running?)
    │   ├── ServerResponseError     a non-2xx answer (nemo_gym.http.server_client; also an
    │   │   │                       aiohttp.ClientResponseError, as environments expect)
    │   │   └── RolloutRunError     an agent answered /run with an error (nemo_gym.rollouts.dispatch)
    │   ├── ServerCallTimeout       no answer byte within server_call_timeout_seconds (also an
    │   │                           aiohttp.SocketTimeoutError); names the call
    │   ├── ServerUnreachable       refused or dropped (the server may have died); names the call
    │   │                           (the three pickle with their status: trainers ship them
    │   │                           across Ray actor boundaries)
    │   └── PermanentEndpointError  an endpoint's key is spent or refused: its client stops
    │                               sending (nemo_gym.http.openai_client)
    ├── JudgeError               a judge call failed: the row is masked, not scored (nemo_gym.judge)
    ├── RolloutFailure           a rollout failed for a reason we can name (nemo_gym.rollouts.failures)
    ├── NonContiguousRollout     a turn's prompt ids do not extend the turns before it (also a
    │                            ValueError; nemo_gym.rollouts.training_tokens)
    ├── ServerStartError         a server did not come up (also a RuntimeError; nemo_gym.runner.run_helper)
    ├── ServerDiedError          a server stopped while it should serve (also a RuntimeError; same module)
    ├── SandboxError             a sandbox failed (also a RuntimeError, NeMo Gym's base for them;
    │   │                        nemo_gym.sandbox.providers.base)
    │   ├── SandboxPtyError      an interactive session broke
    │   └── SandboxCreateError   a provider could not create a sandbox (each provider's own below it)
    ├── ConfigError              a config key is missing or wrong (nemo_gym.config.errors)
    └── SpliceError              carried tokens cannot be spliced (nemo_gym.conversion.prefix)

Only the transport errors decide retries (see `nemo_gym.upstream.pool`). Handlers raise; the
request path (`nemo_gym.server.request_path`) and the FastAPI error handlers answer whatever
reaches them through `api_error_for`, so no handler builds an error body itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson


class NemoGymError(Exception):
    """The root: catch this to handle everything nemo_gym raises deliberately."""


class APIError(NemoGymError):
    """Raise anywhere in a handler to answer with an OpenAI-style error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code


class UpstreamError(APIError):
    """An upstream failure, answered to our caller with the upstream's status and message."""


class ContextLengthExceeded(UpstreamError):
    """The prompt does not fit: callers turn this into an empty, incomplete result."""


class InternalError(APIError):
    """What the caller of a failed handler sees when the failure has no HTTP meaning of its own:
    one line naming it, never the traceback (which the request path logs)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(500, internal_error_message(exc))


class ConversionError(NemoGymError, ValueError):
    """The caller sent something we cannot convert: a 400 naming the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamFormatError(NemoGymError, ValueError):
    """The upstream answered with something we cannot use: a 502 (their fault, not the caller's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransportError(NemoGymError):
    """Below HTTP: the request or its answer did not make it. Each kind's `reason` (the retry
    metric's label) is its name in snake case."""

    reason = "transport"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reason = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


class NotSent(TransportError):
    """The request never reached a server: it is safe to send it anywhere."""


class ConnectError(NotSent):
    """Refused, unreachable, no address for the name, or a failed TLS handshake."""


class ConnectTimeout(NotSent):
    """No connection within `timeouts.connect`."""


class PoolTimeout(NotSent):
    """No pooled connection came free within `timeouts.pool`."""


class ClientClosed(NotSent):
    """The transport was closed (a shutdown)."""


class StaleConnection(TransportError):
    """A reused keep-alive connection the server had just closed: it failed on write, or closed
    within moments of it with no answer byte (sent again at once, once)."""


class ConnectionDropped(TransportError):
    """Closed with no answer byte in any other case: the upstream may have been working on it."""


class ReadTimeout(TransportError):
    """No answer byte within `timeouts.read`: the generation may still be running."""


class ProtocolError(TransportError):
    """The answer started but broke off, or is not valid HTTP."""


class ResponseTooLarge(ProtocolError):
    """An answer over a configured limit (its head, its body, its decoded body)."""


class HeaderValueError(NemoGymError, ValueError):
    """Raised where a header is built from config; the message never repeats the value."""


class ServerCallError(NemoGymError):
    """A call from one of our servers to another server failed."""


class HeadServerUnreachable(ServerCallError, RuntimeError):
    """The head server did not answer, so no server address can be looked up."""


def check_header_value(name: str, value: str) -> str:
    """CR, LF or NUL in a header value would split or cut the request head."""
    if any(c in value for c in "\r\n\0"):
        raise HeaderValueError(
            f"header {name!r} contains a line break or NUL character (check how the value was pasted)"
        )
    return value


def internal_error_message(exc: BaseException) -> str:
    """One line for the caller; the traceback goes to the log only."""
    first_line = (str(exc).splitlines() or [""])[0][:300]
    return f"Internal server error: {type(exc).__name__}: {first_line}".rstrip(": ")


def api_error_for(exc: BaseException, where: str | None = None) -> APIError:
    """The answer our caller gets for `exc`; `where` names the upstream a transport error came
    from. Anything without an HTTP meaning of its own is an `InternalError`."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ConversionError):
        return APIError(400, exc.message, param=exc.param)
    if isinstance(exc, UpstreamFormatError):
        return APIError(502, exc.message)
    if isinstance(exc, TransportError):
        return _transport_answer(exc, f"upstream {where}" if where else "the upstream")
    return InternalError(exc)


def _transport_answer(exc: TransportError, upstream: str) -> UpstreamError:
    if isinstance(exc, ReadTimeout):
        return UpstreamError(504, f"{upstream} did not answer within the read timeout ({exc})")
    if isinstance(exc, NotSent | StaleConnection):
        return UpstreamError(503, f"cannot reach {upstream} ({exc})")
    if isinstance(exc, ConnectionDropped):
        return UpstreamError(502, f"{upstream} closed the connection without answering ({exc})")
    if isinstance(exc, ProtocolError):
        return UpstreamError(502, f"{upstream} failed mid-response ({exc})")
    return UpstreamError(502, f"{upstream}: {exc}")


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """An error answer as OpenAI-style servers write it, whatever its shape on the wire."""

    message: str
    type: str | None = None
    param: str | None = None
    code: Any = None


def error_body_of(data: Any) -> ErrorBody | None:
    """The error in a parsed JSON answer or stream event: OpenAI's nested `{"error": {...}}`,
    `{"error": "text"}`, vLLM's older flat `{"object": "error", "message": ...}`, or FastAPI's
    `{"detail": ...}`; None when `data` is none of these."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        return ErrorBody(
            _text(error.get("message")), error.get("type"), error.get("param"), error.get("code")
        )
    if isinstance(error, str):
        return ErrorBody(error)
    if "message" in data:
        return ErrorBody(_text(data["message"]), data.get("type"), data.get("param"), data.get("code"))
    if "detail" in data:
        return ErrorBody(_text(data["detail"]))
    return None


def parse_error_body(content: bytes, limit: int = 2000) -> ErrorBody:
    """The error an answer's body holds; a body of another shape is its own message, cut at
    `limit` characters (an HTML error page, a proxy's text)."""
    try:
        body = error_body_of(orjson.loads(content))
    except orjson.JSONDecodeError:
        body = None
    if body is not None:
        return body
    return ErrorBody(content[: limit * 4].decode("utf-8", "replace").strip()[:limit])


def _text(value: Any) -> str:
    return "" if value is None else str(value)
