"""Assertions the tests of several packages share: a Responses event stream checked event by
event and through the `openai` client's own stream helpers, JSON shapes compared by keys and
types, and Prometheus samples read from a `/metrics` text."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from nemo_gym.conversion.sse import encode_events

EVENT = TypeAdapter(ResponseStreamEvent)


def strip_parsed(value: Any) -> Any:
    """The openai helper adds `parsed` / `parsed_arguments` to what it returns."""
    if isinstance(value, dict):
        return {k: strip_parsed(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [strip_parsed(v) for v in value]
    return value


def openai_client_streaming(body: bytes) -> openai.OpenAI:
    """An `openai` client whose every request is answered with `body` as an event stream."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="k",
        base_url="http://adapter/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )


def through_openai_client(events: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    """Our encoded events served to `client.responses.stream(...)`: its events and final response
    (None when the stream ends other than with response.completed)."""
    client = openai_client_streaming(encode_events(events))
    with client.responses.stream(model="caller-model", input="hi") as stream:
        seen = list(stream)
        try:
            final = stream.get_final_response()
        except RuntimeError:
            final = None
    return seen, final


def check_events(
    events: list[dict[str, Any]], final: dict[str, Any], *, terminal: str, same_order: bool = True
) -> None:
    """Every event is a valid openai event; numbering, ids and indexes are consistent; deltas add
    up to the done values; done items are the final object's items, announced in its order (at its
    indexes when the stream showed no item the final object lacks); the openai accumulator accepts
    the stream."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENT.validate_python(event)
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0]["response"]["id"] == final["id"] and events[0]["response"]["status"] == "in_progress"
    assert events[-1] == {"type": terminal, "sequence_number": len(events) - 1, "response": final}
    added = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.added"}
    done = {e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
    assert sorted(added) == sorted(done) == list(range(len(added)))
    final_items = {(item["type"], item.get("id")): item for item in final["output"]}
    for index, item in done.items():
        assert (item["type"], item.get("id")) == (added[index]["type"], added[index].get("id"))
        if (item["type"], item.get("id")) in final_items:
            assert item == final_items[(item["type"], item.get("id"))]
    assert all(
        (item["type"], item.get("id")) in {(d["type"], d.get("id")) for d in done.values()}
        for item in final["output"]
    )
    check_item_order(done, final, same_order=same_order)
    check_deltas_add_up(events, added, done)
    state: ResponseStreamState = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    if terminal == "response.completed":
        assert strip_parsed(state._completed_response.to_dict()) == final


def check_item_order(done: dict[int, dict[str, Any]], final: dict[str, Any], *, same_order: bool) -> None:
    """Done items come in the final object's order (or, asked for, in another order)."""
    final_items = {(item["type"], item.get("id")) for item in final["output"]}
    streamed_order = [(done[i]["type"], done[i].get("id")) for i in sorted(done)]
    final_order = [(item["type"], item.get("id")) for item in final["output"]]
    if same_order:
        assert [key for key in streamed_order if key in final_items] == final_order
        if len(streamed_order) == len(final_order):
            assert streamed_order == final_order
    else:
        assert sorted(streamed_order) == sorted(final_order) and streamed_order != final_order


def check_deltas_add_up(
    events: list[dict[str, Any]], added: dict[int, dict[str, Any]], done: dict[int, dict[str, Any]]
) -> None:
    """Each event names an announced item, and the deltas of text, summaries and arguments add up
    to their done values."""
    text: dict[int, str] = {}
    summaries: dict[tuple[int, int], str] = {}
    arguments: dict[int, str] = {}
    for event in events:
        kind = event["type"]
        if "output_index" in event and kind != "response.output_item.added":
            assert event["output_index"] in added
            assert (
                event.get("item_id", added[event["output_index"]].get("id"))
                == added[event["output_index"]]["id"]
            )
        if kind == "response.output_text.delta":
            text[event["output_index"]] = text.get(event["output_index"], "") + event["delta"]
        elif kind == "response.output_text.done":
            assert text.get(event["output_index"], "") == event["text"]
            assert done[event["output_index"]]["content"][0]["text"] == event["text"]
        elif kind == "response.reasoning_summary_text.delta":
            key = (event["output_index"], event["summary_index"])
            summaries[key] = summaries.get(key, "") + event["delta"]
        elif kind == "response.reasoning_summary_text.done":
            assert summaries.get((event["output_index"], event["summary_index"]), "") == event["text"]
        elif kind == "response.function_call_arguments.delta":
            arguments[event["output_index"]] = arguments.get(event["output_index"], "") + event["delta"]
        elif kind == "response.function_call_arguments.done":
            assert arguments.get(event["output_index"], "") == event["arguments"]
            assert done[event["output_index"]]["arguments"] == event["arguments"]


def shape_diff(real: Any, ours: Any, path: str = "$") -> list[str]:
    """Differences in keys (recursively) and JSON types; a null in either is compared by key only."""
    if real is None or ours is None:
        return []
    if isinstance(real, bool) or isinstance(ours, bool):
        return (
            []
            if isinstance(real, bool) and isinstance(ours, bool)
            else [f"{path}: {type(real).__name__} vs {type(ours).__name__}"]
        )
    if isinstance(real, int | float) and isinstance(ours, int | float):
        return []
    if type(real) is not type(ours):
        return [f"{path}: {type(real).__name__} vs {type(ours).__name__}"]
    if isinstance(real, dict):
        diffs = [f"{path}: keys {sorted(set(real) ^ set(ours))}"] if set(real) != set(ours) else []
        for key in set(real) & set(ours):
            diffs += shape_diff(real[key], ours[key], f"{path}.{key}")
        return diffs
    if isinstance(real, list) and real and ours:
        return shape_diff(real[0], ours[0], f"{path}[0]")
    return []


def samples(text: str, name: str) -> dict[str, float]:
    """{label string: value} of one metric's samples, e.g. {'route="/v1/responses",status="200"': 2.0}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            labels = key[len(name) :].strip("{}")
            out[labels] = float(value)
    return out
