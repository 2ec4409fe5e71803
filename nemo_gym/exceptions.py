"""Every error nemo_gym raises on purpose, in one tree, and the one place they become HTTP answers.

    NemoGymError
    ├── APIError                 an answer to our caller: status, message, type, param, code
    │   └── UpstreamError        the upstream's own error answer, its status and message kept
    │       └── ContextLengthExceeded   the prompt does not fit: callers return an empty result
    ├── ConversionError          the caller sent something we cannot convert (400, names the field)
    ├── UpstreamFormatError      the upstream answered with something we cannot use (502)
    ├── TransportError           talking to an upstream failed below HTTP
    │   ├── NotSent              the request never reached a server: safe to send anywhere
    │   │   ├── ConnectError     refused, unreachable, DNS, TLS handshake
    │   │   ├── ConnectTimeout   no connection within timeouts.connect
    │   │   ├── PoolTimeout      no free pooled connection within timeouts.pool
    │   │   └── ClientClosed     the client was closed (shutdown) or never started
    │   ├── StaleConnection      a reused keep-alive connection the server had just closed: it
    │   │                        failed on write, or closed within moments of it with no answer
    │   ├── ConnectionDropped    closed with no answer byte in any other case: the upstream may
    │   │                        have been working on it, so it is an upstream failure
    │   ├── ReadTimeout          no answer within timeouts.read: the generation may still run
    │   └── ProtocolError        the answer started but broke off, or is not valid HTTP
    │       └── ResponseTooLarge an answer over a configured limit (head, body, decompressed)
    ├── HeaderValueError         a configured header value holds CR, LF or NUL
    ├── ServerCallError          a call between our servers (ServerClient) failed
    │   ├── HeadServerUnreachable   the head server did not answer (is ng_run running?)
    │   ├── ServerResponseError     a non-2xx answer (nemo_gym.http.server_client; also an
    │   │                           aiohttp.ClientResponseError, as environments expect)
    │   ├── ServerCallTimeout       no answer byte within server_call_timeout_seconds (also an
    │   │                           aiohttp.SocketTimeoutError); names the call
    │   └── ServerUnreachable       refused or dropped (the server may have died); names the call
    │                               (the three pickle with their status: trainers ship them
    │                               across Ray actor boundaries)
    ├── ConfigError              a config key is missing or wrong (nemo_gym.config.errors)
    └── SpliceError              carried tokens cannot be spliced (nemo_gym.conversion.prefix)

Only the transport errors decide retries (see `nemo_gym.upstream.pool`); `api_error_for` maps
any of them to the status and message our caller sees.
"""

from __future__ import annotations

from typing import Any


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
    """Below HTTP: the request or its answer did not make it. `reason` is the retry-metric label."""

    reason = "transport"
    status = 502


class NotSent(TransportError):
    reason = "not_sent"
    status = 503


class ConnectError(NotSent):
    reason = "connect_error"


class ConnectTimeout(NotSent):
    reason = "connect_timeout"


class PoolTimeout(NotSent):
    reason = "pool_timeout"


class ClientClosed(NotSent):
    reason = "client_closed"


class StaleConnection(TransportError):
    reason = "stale_connection"
    status = 503


class ConnectionDropped(TransportError):
    reason = "connection_dropped"
    status = 502


class ReadTimeout(TransportError):
    reason = "read_timeout"
    status = 504


class ProtocolError(TransportError):
    reason = "protocol_error"
    status = 502


class ResponseTooLarge(ProtocolError):
    reason = "response_too_large"


class HeaderValueError(NemoGymError, ValueError):
    """Raised where a header is built from config; the message never repeats the value."""


class ServerCallError(NemoGymError):
    """A call from one of our servers to another failed."""


class HeadServerUnreachable(ServerCallError, RuntimeError):
    """The head server did not answer, so no server address can be looked up."""


def check_header_value(name: str, value: str) -> str:
    """CR, LF or NUL in a header value would split or cut the request head."""
    if any(c in value for c in "\r\n\0"):
        raise HeaderValueError(
            f"header {name!r} contains a line break or NUL character (check how the value was pasted)"
        )
    return value


def api_error_for(exc: Exception, where: str) -> APIError:
    """The answer our caller gets for a failure talking to `where` (an upstream URL)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ConversionError):
        return APIError(400, exc.message, param=exc.param)
    if isinstance(exc, UpstreamFormatError):
        return APIError(502, exc.message)
    if isinstance(exc, ReadTimeout):
        return UpstreamError(504, f"upstream {where} did not answer within the read timeout ({exc})")
    if isinstance(exc, NotSent | StaleConnection):
        return UpstreamError(503, f"cannot reach upstream {where} ({exc})")
    if isinstance(exc, ConnectionDropped):
        return UpstreamError(502, f"upstream {where} closed the connection without answering ({exc})")
    if isinstance(exc, ProtocolError):
        return UpstreamError(502, f"upstream {where} failed mid-response ({exc})")
    if isinstance(exc, TransportError):
        return UpstreamError(exc.status, f"upstream {where}: {exc}")
    raise TypeError(f"not a nemo_gym error: {type(exc).__name__}")
