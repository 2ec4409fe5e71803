"""uvicorn's httptools protocol, with each response's head and body sent in one write.

uvicorn writes the status line and headers on `http.response.start` and the body on
`http.response.body`: two `send()` syscalls and two TCP segments per response, and the
caller wakes up twice. Holding the head until the body (or the end of the response) halves
that. Passed to uvicorn as `http=` (its documented way to plug in a protocol class).
A streamed response's head goes out with its first chunk.

It subclasses a uvicorn class that is not public API, so it is used only on the uvicorn
releases it is tested with (`TESTED_UVICORN`); on any other, servers use uvicorn's own
httptools protocol unchanged and log that once.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

PROTOCOL_PATH = "nemo_gym.server.http_protocol:CoalescingHttpToolsProtocol"
# uvicorn minor releases whose HttpToolsProtocol this subclass is tested against (tests/test_http_protocol.py).
TESTED_UVICORN = ("0.54.",)
logger = logging.getLogger("nemo_gym.server")


def http_protocol_option() -> str:
    """What to pass as uvicorn's `http=`: the coalescing protocol where it is tested."""
    if uvicorn.__version__.startswith(TESTED_UVICORN):
        return PROTOCOL_PATH
    logger.info(
        "uvicorn %s is not among the releases nemo_gym's one-write protocol is tested with (%s); "
        "using uvicorn's httptools protocol",
        uvicorn.__version__,
        ", ".join(v + "x" for v in TESTED_UVICORN),
    )
    return "httptools"


class _HeadHoldingTransport:
    """Delegates to the real transport, but keeps a response head back until the next write.

    Only a final response's head is held (it starts with "HTTP/1.1 " and not "HTTP/1.1 1"):
    an interim "100 Continue" must go out at once, since the client waits for it.
    """

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self._held = data
        else:
            self._transport.write(data)

    def write_whole(self, data: bytes) -> None:
        """A whole response at once: nothing to hold back."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # per request: spare it the __getattr__ detour
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RequestHook:
    """Put in each request's scope (under REQUEST_HOOK) by our protocol, for the request path.

    `on_disconnect`: armed with what to cancel. Firing it from `connection_lost` costs nothing
    per request, where the portable way, a task per request waiting for `http.disconnect`,
    costs a task and two loop turns.

    `answer()`: a whole answer in one write, for the request path's hot routes. uvicorn's `send`
    takes two awaited messages and checks every header against two regular expressions; the
    request path's headers are its own constants and its signed cookie, so that work was a
    fixed share of each request's CPU (docs/performance.md). The bytes are the ones uvicorn
    writes: its status line, its default headers, then ours.
    """

    __slots__ = ("_cycle", "on_disconnect")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        # Weak: the cycle's scope holds this hook, and a strong reference back would make every
        # request a reference cycle, left to the (tuned, rare) cyclic GC: memory grew per request.
        self._cycle = weakref.ref(cycle)
        self.on_disconnect: Any = None

    def fire(self) -> None:
        callback, self.on_disconnect = self.on_disconnect, None
        if callback is not None:
            callback()

    def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Send head and body, or return False when uvicorn's own `send` must (the answer
        started already, the caller is gone, or writes are paused)."""
        cycle = self._cycle()
        if cycle is None or cycle.response_started or cycle.disconnected or cycle.flow.write_paused:
            return False
        if cycle.access_log:
            scope = cycle.scope
            cycle.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        parts = [STATUS_LINE[status]]
        for name, value in (*cycle.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-length: ", b"%d" % len(body), b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        transport = cycle.transport
        transport.write_whole(b"".join(parts))  # type: ignore[attr-defined]
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            transport.close()
        cycle.on_response()
        return True


REQUEST_HOOK = "nemo_gym.request_hook"


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHoldingTransport(transport))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:  # its task is created, not yet started: the hook is there when it runs
            cycle.scope[REQUEST_HOOK] = RequestHook(cycle)  # type: ignore[index]

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            hook = cycle.scope.get(REQUEST_HOOK)  # type: ignore[union-attr]
            if hook is not None:
                hook.fire()

    def on_response_complete(self) -> None:
        # A response with no body write (HEAD) must not keep its head back.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
