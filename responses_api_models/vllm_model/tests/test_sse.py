"""The SSE parser on real vLLM captures split at every byte, and our encoders read back by the
`openai` client's own decoder."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openai._streaming import SSEDecoder

from nemo_gym.conversion.errors import UpstreamFormatError
from nemo_gym.conversion.sse import (
    DONE_BYTES,
    ChunkReader,
    SSEEvent,
    SSEParser,
    encode_chunk,
    encode_event,
    encode_events,
    iter_events,
)

WIRE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "vllm_wire"
CAPTURES = sorted(p.name for p in WIRE.glob("*.sse"))


def events_of(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert parser.close() is True
    return events


def data_of(pieces: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    payloads = [data for piece in pieces for data in parser.feed_data(piece)]
    assert parser.close() is True
    return payloads


def openai_events(raw: bytes) -> list[tuple[str | None, str]]:
    return [(sse.event, sse.data) for sse in SSEDecoder().iter_bytes(iter([raw]))]


def test_captures_present() -> None:
    assert CAPTURES == [
        "chat_stream.sse",
        "chat_stream_usage_logprobs_tokenids.sse",
        "reasoning_r1_chat_stream_biased.sse",
        "responses_stream.sse",
        "tools_required_strict_enum_stream.sse",
    ]


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_split_of_every_capture(name: str, newline: bytes) -> None:
    raw = (WIRE / name).read_bytes().replace(b"\n", newline)
    whole = events_of([raw])
    # The same events as the openai client's decoder reads, and every payload is JSON or [DONE].
    assert [(e.event, e.data) for e in whole] == openai_events(raw)
    assert all(e.done or isinstance(e.json(), dict) for e in whole)
    payloads = [e.data.encode() for e in whole]
    for cut in range(1, len(raw)):
        assert events_of([raw[:cut], raw[cut:]]) == whole, cut
        assert data_of([raw[:cut], raw[cut:]]) == payloads, cut
    assert events_of([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert data_of([raw[i : i + 1] for i in range(len(raw))]) == payloads


def test_capture_event_counts_and_types() -> None:
    chat = events_of([(WIRE / "tools_required_strict_enum_stream.sse").read_bytes()])
    assert len(chat) == 26 and chat[-1].done and all(e.event is None for e in chat)
    assert [e.json()["object"] for e in chat[:-1]] == ["chat.completion.chunk"] * 25
    responses = events_of([(WIRE / "responses_stream.sse").read_bytes()])
    assert [e.event for e in responses] == [e.json()["type"] for e in responses]
    assert [e.json()["sequence_number"] for e in responses] == list(range(10))
    # A multi-byte character split across pieces decodes whole.
    usage = (WIRE / "chat_stream_usage_logprobs_tokenids.sse").read_bytes()
    at = usage.index("\ufffd70".encode()) + 1
    events = events_of([usage[:at], usage[at:]])
    assert events[3].json()["choices"][0]["delta"]["content"] == "\ufffd70"


def test_field_rules() -> None:
    raw = (
        b"\xef\xbb\xbf: a comment\n"
        b"event: custom\n"
        b"id: 7\n"
        b"retry: 1500\n"
        b"data: first\n"
        b"data:second\n"
        b"data\n"
        b"unknown: x\n"
        b"\n"
        b"\n"  # a blank line with no data dispatches nothing
        b"event: ignored\n"
        b"\n"  # an event name without data is dropped, and does not carry over
        b"data:  two spaces\n\n"
        b"id: a\0b\n"  # an id with NUL is ignored
        b"data: [DONE]\n\n"
    )
    expected = [
        SSEEvent("first\nsecond\n", "custom", "7", 1500),
        SSEEvent(" two spaces", None, "7", 1500),
        SSEEvent("[DONE]", None, "7", 1500),
    ]
    assert events_of([raw]) == expected
    assert data_of([raw]) == [e.data.encode() for e in expected]
    for cut in range(1, len(raw)):
        assert events_of([raw[:cut], raw[cut:]]) == expected, cut
        assert data_of([raw[:cut], raw[cut:]]) == [e.data.encode() for e in expected], cut
    assert expected[-1].done and not expected[0].done


def test_unterminated_event_is_discarded_and_reported() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [SSEEvent('{"a": 1}')]
    assert parser.close() is False
    parser = SSEParser()
    assert parser.feed(b"data: x\n") == []
    assert parser.close() is False  # the blank line that ends the event never came
    assert parser.feed(b"") == []


def test_cr_at_the_end_of_a_piece_then_lf() -> None:
    assert events_of([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SSEEvent("a\nb")]
    assert events_of([b"data: a\r", b"\r"]) == [SSEEvent("a")]


def test_iter_events() -> None:
    assert list(iter_events([b"data: 1\n", b"\ndata: 2\n\n"])) == [SSEEvent("1"), SSEEvent("2")]


def test_encoders_round_trip_through_openai_decoder() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "delta": "a\nb\r\n\u2028é"}
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "x\n\ny"}}]}
    raw = encode_event(event) + encode_chunk(chunk) + DONE_BYTES
    assert raw.startswith(b"event: response.output_text.delta\ndata: {")
    assert raw.count(b"\n\n") == 3  # one payload line per event: newlines inside are escaped
    decoded = openai_events(raw)
    assert decoded == [
        ("response.output_text.delta", orjson.dumps(event).decode()),
        (None, orjson.dumps(chunk).decode()),
        (None, "[DONE]"),
    ]
    assert [e.json() for e in events_of([raw])[:2]] == [event, chunk]
    assert encode_events([event, event]) == encode_event(event) * 2


def test_long_event_in_many_small_pieces() -> None:
    payload = orjson.dumps({"prompt_token_ids": list(range(20_000))})
    raw = b"data: " + payload + b"\n\n"
    parser = SSEParser()
    events = [e for i in range(0, len(raw), 7) for e in parser.feed(raw[i : i + 7])]
    assert [e.json() for e in events] == [orjson.loads(payload)] and parser.close()


def test_event_size_limit() -> None:
    parser = SSEParser(max_event_bytes=100)
    assert parser.feed(b"data: " + b"x" * 90 + b"\n\n") == [SSEEvent("x" * 90)]
    parser.feed(b"data: " + b"y" * 60 + b"\n")
    with pytest.raises(UpstreamFormatError, match="larger than 100 bytes"):
        parser.feed(b"data: " + b"z" * 40)  # the unfinished line counts too
    with pytest.raises(UpstreamFormatError):
        SSEParser(max_event_bytes=10).feed(b"data: " + b"a" * 20)


@pytest.mark.parametrize("name", ["chat_stream.sse", "tools_required_strict_enum_stream.sse"])
def test_chunk_reader(name: str) -> None:
    raw = (WIRE / name).read_bytes()
    whole = [e.json() for e in events_of([raw]) if not e.done]
    reader = ChunkReader()
    assert [c for i in range(0, len(raw), 13) for c in reader.feed(raw[i : i + 13])] == whole
    assert reader.done
    reader.close()
    assert reader.feed(b"data: {}\n\n") == []  # nothing after [DONE]
    cut = ChunkReader()
    assert cut.feed(raw[: raw.index(b"data: [DONE]")]) == whole
    with pytest.raises(UpstreamFormatError, match="ended before its final"):
        cut.close()
    with pytest.raises(UpstreamFormatError, match="not JSON"):
        ChunkReader().feed(b"data: {broken\n\n")
