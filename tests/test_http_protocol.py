"""One write per response (head + body) on uvicorn, without breaking HEAD, 100-continue,
streaming or keep-alive: a fake transport for the write count, a real uvicorn for the rest."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from nemo_gym.server.http_protocol import PROTOCOL_PATH, REQUEST_HOOK, _HeadHoldingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def test_head_and_body_go_out_in_one_write() -> None:
    fake = FakeTransport()
    transport = _HeadHoldingTransport(fake)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert fake.writes == []
    assert transport.get_write_buffer_size() == 38
    transport.write(b"{}")
    assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"more")  # not a head: straight through
    assert fake.writes[-1] == b"more"
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # everything else delegates


def test_interim_answers_are_never_held_and_close_flushes() -> None:
    fake = FakeTransport()
    transport = _HeadHoldingTransport(fake)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert fake.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
    transport.close()
    assert fake.writes[-1] == b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n" and fake.closed


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    reply = b"echo:" + body
    if scope["path"] == "/direct":
        hook = scope[REQUEST_HOOK]
        answered = hook.answer(200, [(b"content-type", b"text/plain")], reply)
        # once started, only uvicorn's own send may go on (which refuses a second answer)
        assert (answered, hook.answer(200, [], b"again")) == (True, False)
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(reply)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=PROTOCOL_PATH,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    srv = uvicorn.Server(config)
    task = asyncio.ensure_future(srv.serve(sockets=[sock]))
    for _ in range(500):  # up to 5 s
        if srv.started:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("uvicorn did not start")
    yield port
    srv.should_exit = True
    await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        None,
    )
    if length is None:  # chunked
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    return head, await asyncio.wait_for(reader.readexactly(length), 2)


async def test_keep_alive_head_continue_and_streaming_through_uvicorn(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    # two requests on one connection
    for payload in (b"first", b"second"):
        writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%b" % (len(payload), payload))
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"echo:" + payload
    # HEAD: no body write at all, the head must still arrive
    writer.write(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5\r\n" in head
    # Expect: 100-continue: the interim answer comes before we send the body
    writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    head, body = await read_response(reader)
    assert body == b"echo:body"
    # a streamed (chunked) response arrives whole
    writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head, body = await read_response(reader)
    assert b"transfer-encoding: chunked" in head and body == b"one,two,three"
    writer.close()


async def test_bad_request_is_answered_then_closed(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)  # read() returns at EOF: the server closed
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    writer.close()


def test_the_subclass_is_used_only_on_tested_uvicorn_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    from nemo_gym.server import http_protocol

    monkeypatch.setattr(uvicorn, "__version__", "0.54.3")
    assert http_protocol.http_protocol_option() == PROTOCOL_PATH
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    assert http_protocol.http_protocol_option() == "httptools"


def test_installed_uvicorn_is_a_tested_release() -> None:
    """If this fails after an upgrade, run this file against the new uvicorn and add it to TESTED_UVICORN."""
    from nemo_gym.server.http_protocol import TESTED_UVICORN

    assert uvicorn.__version__.startswith(TESTED_UVICORN), uvicorn.__version__


def without_date(head: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if not line.startswith(b"date: ")]


async def test_the_hooks_one_write_answer_is_uvicorns_answer_byte_for_byte(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    heads = []
    for path in (b"/x", b"/direct", b"/x"):  # keep-alive holds across both kinds of answer
        writer.write(b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi" % path)
        head, body = await read_response(reader)
        assert body == b"echo:hi"
        heads.append(without_date(head))
    assert heads[0] == heads[1] == heads[2]
    assert heads[1] == [
        b"HTTP/1.1 200 OK",
        b"server: uvicorn",
        b"content-type: text/plain",
        b"content-length: 7",
        b"",
        b"",
    ]
    writer.close()


async def test_the_hooks_answer_to_http_1_0_says_close_and_closes(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /direct HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
    answer = await asyncio.wait_for(reader.read(), 2)  # read() returns at EOF: the server closed
    assert without_date(answer) == [
        b"HTTP/1.1 200 OK",
        b"server: uvicorn",
        b"content-type: text/plain",
        b"content-length: 7",
        b"connection: close",
        b"",
        b"echo:hi",
    ]
    writer.close()


async def test_the_hooks_answer_is_access_logged_as_uvicorn_logs(
    server: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="uvicorn.access")
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    for path in (b"/x?q=1", b"/direct?q=1"):
        writer.write(b"POST %b HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi" % path)
        await read_response(reader)
    writer.close()
    lines = [r.getMessage().split(" - ", 1)[1] for r in caplog.records if r.name == "uvicorn.access"]
    assert lines == ['"POST /x?q=1 HTTP/1.1" 200', '"POST /direct?q=1 HTTP/1.1" 200']


@pytest.mark.parametrize("state", ["response_started", "disconnected", "write_paused"])
def test_the_hook_leaves_the_answer_to_uvicorn_when_it_cannot_write_at_once(state: str) -> None:
    from types import SimpleNamespace

    from nemo_gym.server.http_protocol import RequestHook

    class Cycle:  # what the hook reads of uvicorn's RequestResponseCycle
        response_started = state == "response_started"
        disconnected = state == "disconnected"
        flow = SimpleNamespace(write_paused=state == "write_paused")

    fake = FakeTransport()
    cycle = Cycle()
    cycle.transport = _HeadHoldingTransport(fake)  # type: ignore[attr-defined,arg-type]
    assert RequestHook(cycle).answer(200, [], b"{}") is False  # type: ignore[arg-type]
    assert fake.writes == []


def test_the_hook_and_its_request_are_freed_without_the_cyclic_gc() -> None:
    """The scope holds the hook; were the hook to hold the request's cycle strongly, every request
    would be garbage only the (rarely run) cyclic collector frees, and memory would grow."""
    import gc
    import weakref

    from nemo_gym.server.http_protocol import RequestHook

    class Cycle:
        scope: dict[str, Any]

    cycle = Cycle()
    cycle.scope = {REQUEST_HOOK: RequestHook(cycle)}  # type: ignore[arg-type]
    gone = weakref.ref(cycle)
    gc.disable()
    try:
        del cycle
        assert gone() is None
    finally:
        gc.enable()
