"""Scripted raw TCP servers on 127.0.0.1 for tests of the upstream transports: each handler
decides what bytes go back, so every framing, close and failure an upstream can produce is
reproducible; and a minimal forward proxy, and self-signed certificates for TLS.

The pytest fixtures built on these (`server_factory`, `self_signed`, `proxy`) are in the
root conftest.py.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY")


@dataclass(eq=False)
class RawServer:
    """A raw TCP server whose handler decides what bytes go back; records what came in."""

    handler: Handler
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head + Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.disconnects += 1
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def reply(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


def echo(delay: float = 0.0) -> Handler:
    """Keep-alive server: echoes each request body back as the response body, after `delay`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        while (request := await srv.read_request(reader)) is not None:
            if delay:
                await asyncio.sleep(delay)
            writer.write(reply(request.split(b"\r\n\r\n", 1)[1]))
            await writer.drain()

    return handler


answer_each = echo()


def answer_once(raw: bytes, linger: float = 0.0) -> Handler:
    """Reads one request, sends `raw` back (may be b""), stays `linger` seconds, then closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: RawServer) -> None:
        await srv.read_request(reader)
        if raw:
            writer.write(raw)
            await writer.drain()
        if linger:
            await asyncio.sleep(linger)

    return handler


def make_cert(directory: Path, name: str, ip_san: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate and its key (needs the openssl command)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    extra = ["-addext", f"subjectAltName=IP:{name}"] if ip_san else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         *extra, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


class ConnectProxy:
    """A minimal forward proxy: CONNECT tunnels, and absolute-form plain-HTTP requests relayed
    on a new connection. Records the request line of each."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            self.seen.append(line)
            method, target, _ = line.split(b" ", 2)
            if method == b"CONNECT":
                host, port = target.rsplit(b":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # http://host:port/path: pass the request on as it is
                authority = target.split(b"/")[2]
                host, port = authority.rsplit(b":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
