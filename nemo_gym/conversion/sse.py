"""Server-sent events: an incremental parser for what vLLM streams, encoders for what we stream.

The parser follows the WHATWG event-stream rules (any of CRLF, LF or CR ends a line; `:`
starts a comment; one space after the colon is dropped; `data` lines join with LF; an event
is dispatched on a blank line) and works on bytes, so a chunk boundary may fall anywhere,
inside a line ending or a multi-byte character. Line endings are ASCII, so splitting the bytes
before decoding never cuts a UTF-8 sequence.

Encoders: Responses events go out as `event: <type>` + `data: <json>` (what OpenAI and vLLM
send; the `openai` client reads the type from the JSON, the event line serves other readers);
chat chunks as bare `data: <json>` lines ended by `data: [DONE]`. orjson never writes a raw
newline, so one `data:` line always holds the whole payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from nemo_gym.exceptions import UpstreamFormatError

DONE = "[DONE]"
DONE_BYTES = b"data: [DONE]\n\n"
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    @property
    def done(self) -> bool:
        """The chat stream's end marker (vLLM and OpenAI both send it as the last event)."""
        return self.data == DONE

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEParser:
    """Feed bytes as they arrive; get back every event completed by them.

    Pieces without a line ending are only collected (joined once the line ends), so an event
    arriving in many small pieces costs linear time. `max_event_bytes` bounds what one event may
    hold in memory; past it `feed` raises `UpstreamFormatError`.
    """

    __slots__ = (
        "_buffer",
        "_parts",
        "_partial",
        "_data_bytes",
        "_skip_lf",
        "_started",
        "_data",
        "_event",
        "_last_id",
        "_retry",
        "max_event_bytes",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""
        self._parts: list[bytes] = []  # pieces of an unfinished line, after _buffer
        self._partial = 0  # bytes of the unfinished line
        self._data_bytes = 0  # bytes of the current event's data lines
        self._skip_lf = False  # the previous chunk ended in CR: a LF opening this one is part of it
        self._started = False
        self._data: list[bytes] = []
        self._event: str | None = None
        self._last_id: str | None = None  # persists across events, as the spec says
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in self._lines(chunk):
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = None
            elif line[0] != 0x3A:  # ':' starts a comment
                self._field(line)
        self._after_lines()
        return events

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """`feed` for readers that only want each event's data, undecoded (orjson reads bytes):
        the upstream's chat stream, where it is most of the adapter's parsing time."""
        payloads: list[bytes] = []
        data = self._data
        for line in self._lines(chunk):
            if not line:
                if data:
                    payloads.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                    self._data_bytes = 0
                self._event = None
            elif line[:6] == b"data: ":
                data.append(line[6:])
                self._data_bytes += len(line) - 6
            elif line[0] != 0x3A:
                self._field(line)
        self._after_lines()
        return payloads

    def _lines(self, chunk: bytes) -> list[bytes]:
        """The lines this piece completes (line endings normalized, BOM dropped)."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._started and b"\n" not in chunk and b"\r" not in chunk:
            self._parts.append(chunk)
            self._partial += len(chunk)
            self._check_size()
            return []
        if self._parts:
            data = b"".join([self._buffer, *self._parts, chunk])
            self._parts = []
        else:
            data = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._buffer = data
                return []
            self._started = True
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
        if b"\r" in data:
            self._skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        return lines

    def _after_lines(self) -> None:
        self._partial = len(self._buffer)
        self._check_size()

    def _check_size(self) -> None:
        if self.max_event_bytes is not None and self._data_bytes + self._partial > self.max_event_bytes:
            raise UpstreamFormatError(f"upstream stream event larger than {self.max_event_bytes} bytes")

    def close(self) -> bool:
        """End of the body. True if it ended cleanly: nothing pending. An event without its
        closing blank line is discarded (per the spec), and a truncated upstream stream shows
        up here rather than as a half-parsed event."""
        clean = not self._buffer and not self._parts and not self._data
        self._buffer = b""
        self._parts = []
        self._partial = 0
        self._data_bytes = 0
        self._data.clear()
        self._event = None
        return clean

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_bytes += len(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)
        # other field names are ignored, as the spec says

    def _dispatch(self) -> SSEEvent:
        raw = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SSEEvent(raw.decode("utf-8", "replace"), self._event, self._last_id, self._retry)
        self._data = []
        self._event = None
        self._data_bytes = 0
        return event


class ChunkReader:
    """An upstream chat stream's body → its JSON payloads, up to `data: [DONE]`.

    `feed` returns the payloads completed by a piece of the body (`UpstreamFormatError` for one
    that is not JSON); `close` at the end of the body raises `UpstreamFormatError` if the stream
    stopped before `[DONE]`, which is how a cut upstream stream shows when the connection itself
    closed cleanly. Payloads after `[DONE]` are ignored.
    """

    __slots__ = ("parser", "done")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self.parser = SSEParser(max_event_bytes)
        self.done = False

    def feed(self, data: bytes) -> list[Any]:
        payloads: list[Any] = []
        if self.done:
            return payloads
        for raw in self.parser.feed_data(data):
            if raw == b"[DONE]":
                self.done = True
                break
            try:
                payloads.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                text = raw[:200].decode("utf-8", "replace")
                raise UpstreamFormatError(f"upstream stream event is not JSON: {text!r}") from None
        return payloads

    def close(self) -> None:
        self.parser.close()
        if not self.done:
            raise UpstreamFormatError("the upstream stream ended before its final `data: [DONE]`")


def iter_events(chunks: Iterable[bytes]) -> Iterator[SSEEvent]:
    """Every event of a whole body given as chunks (tests, and readers that are not incremental)."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    parser.close()


def encode_event(event: dict[str, Any]) -> bytes:
    """One Responses streaming event (it carries its own `type`)."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def encode_events(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(map(encode_event, events))


def encode_chunk(chunk: dict[str, Any]) -> bytes:
    """One chat completion chunk; end the stream with `DONE_BYTES`."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def encode_chunks(chunks: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(map(encode_chunk, chunks))
