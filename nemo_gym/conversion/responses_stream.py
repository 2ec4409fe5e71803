"""Responses API streaming events, built as vLLM's chat deltas arrive.

The final object is not assembled from the events: the chunks are accumulated into the
chat completion a non-streaming call would have returned and converted by `chat_to_response`,
with the ids the events announced, so a streamed answer ends in exactly the object the
non-streaming path returns for it (token fields on its last item included). Deltas are sent as
soon as their kind is known; the `.done` events, sent at the end, carry the final object's values.

Where the text goes while streaming mirrors `split_think` on the folded text (`<think>` + vLLM's
reasoning + `</think>` + content, or the content alone when the think block arrives inside it):
think blocks become summaries of one reasoning item, the rest the message's text, tool calls
function-call items. What the stream cannot know early: an unclosed `<think>` at the end (a cut
generation) is text in the final object although it streamed as a summary; text that precedes
a think block, or a tool call that precedes text, streams at an earlier `output_index` than the
final object's order gives it. Both are rare; the final object is right in every case.

Pure: parsed chunks in, event dicts out (encode them with `sse.encode_event`).
"""

from __future__ import annotations

import time
from typing import Any

from nemo_gym.conversion.chat_stream import ChatAccumulator, ReasoningFolder, check_chunk
from nemo_gym.conversion.chat_to_responses import (
    OutputIds,
    chat_to_response,
    empty_response,
    response_shell,
)
from nemo_gym.conversion.think import CLOSE, OPEN, TEXT, THINK, ThinkSplitter, ThinkStep
from nemo_gym.protocol.tokens import TokenInfo

_EMPTY_PART = {"type": "output_text", "text": "", "annotations": []}


class _Item:
    __slots__ = ("kind", "id", "output_index", "texts", "name", "call_id", "open_summary", "done")

    def __init__(self, kind: str, item_id: str | None, output_index: int) -> None:
        self.kind = kind
        self.id = item_id
        self.output_index = output_index
        self.texts: list[list[str]] = []  # message: one part; reasoning: one per summary; call: arguments
        self.name: str | None = None
        self.call_id: str | None = None
        self.open_summary = False
        self.done = False

    def text(self, index: int = 0) -> str:
        return "".join(self.texts[index]) if index < len(self.texts) else ""

    def snapshot(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            return {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": [{**_EMPTY_PART, "text": self.text()}] if status != "in_progress" else [],
            }
        if self.kind == "reasoning":
            return {
                "id": self.id,
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "".join(t)} for t in self.texts],
            }
        return {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.text(),
            "status": status,
        }


class _Call:
    __slots__ = ("id", "name", "pending", "item")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.pending: list[str] = []
        self.item: _Item | None = None


class ResponsesStream:
    """One `/v1/responses` stream for one request.

    `start` (optional: `feed` and the other endings start the stream themselves) gives
    `response.created` and `response.in_progress`; `feed` the events for one upstream chunk;
    `finish` the closing events and `response.completed` (`response.incomplete` when cut at
    max_output_tokens, unless `incomplete_as_completed`, for clients that only finish on
    `response.completed`, as vLLM's own Responses stream does). `fail` ends it with `error` and
    `response.failed`; `context_length_exceeded` ends it with the non-streaming empty result.
    After `finish`, `response` is the final object.
    """

    def __init__(
        self,
        request: dict[str, Any],
        *,
        model: str,
        uses_reasoning_parser: bool = True,
        incomplete_as_completed: bool = False,
        ids: OutputIds | None = None,
    ) -> None:
        self.request = request
        self.model = model
        self.uses_reasoning_parser = uses_reasoning_parser
        self.incomplete_as_completed = incomplete_as_completed
        self.ids = ids or OutputIds()
        self.accumulated = ChatAccumulator()
        self.response: dict[str, Any] | None = None
        self._folder = ReasoningFolder(uses_reasoning_parser)
        self._splitter = ThinkSplitter() if uses_reasoning_parser else None
        self._sequence = 0
        self._created_at: float | None = None
        self._items: list[_Item] = []
        self._message: _Item | None = None
        self._reasoning: _Item | None = None
        self._calls: dict[int, _Call] = {}

    # ---- public ------------------------------------------------------------------------

    def start(self, created_at: float | None = None) -> list[dict[str, Any]]:
        if self._created_at is not None:
            return []
        self._created_at = float(time.time() if created_at is None else created_at)
        shell = self._shell("in_progress")
        return [
            self._event("response.created", response=shell),
            self._event("response.in_progress", response=shell),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """Events for one upstream chunk. Raises `UpstreamError` for an error event in the stream
        and `UpstreamFormatError` for a reasoning field the adapter is not configured for: answer
        both with `fail`."""
        chunk = check_chunk(chunk)
        self.accumulated.add(chunk)
        events = self.start(chunk.get("created"))
        choice = next((c for c in chunk.get("choices") or () if c.get("index", 0) == 0), None)
        if choice is None:
            return events
        delta = choice.get("delta") or {}
        piece = self._folder.fold(delta)
        if choice.get("finish_reason") is not None:
            piece = (piece or "") + self._folder.close()
        if piece:
            self._text(piece, events)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, events)
        return events

    def token_info(self, prompt_token_ids: list[int] | None = None) -> TokenInfo:
        """The token fields for `finish`, as the non-streaming path builds them (see
        `ChatAccumulator.token_info`)."""
        return self.accumulated.token_info(prompt_token_ids)

    def finish(self, token_info: TokenInfo | None = None) -> list[dict[str, Any]]:
        """The closing events, after the upstream's last chunk. Raises `UpstreamFormatError`
        when the chunks do not make an answer (no choice): answer it with `fail`."""
        events = self.start()
        closing = self._folder.close()
        if closing:
            self._text(closing, events)
        if self._splitter is not None:
            self._steps(self._splitter.flush(), events)
        final = chat_to_response(
            self.accumulated.result(),
            self.request,
            model=self.model,
            uses_reasoning_parser=self.uses_reasoning_parser,
            token_info=token_info,
            ids=self.ids,
        )
        self._close_items(final["output"], events)
        return events + self._end(final)

    def fail(self, message: str, *, code: str = "server_error") -> list[dict[str, Any]]:
        """`error` then `response.failed` (with what was streamed so far): an upstream failure
        after the stream started. Send these, then close the stream."""
        events = self.start()
        events.append(self._event("error", code=code, message=message, param=None))
        response = self._shell("failed")
        response["error"] = {"code": code, "message": message}
        response["output"] = [item.snapshot("incomplete") for item in self._items]
        events.append(self._event("response.failed", response=response))
        return events

    def context_length_exceeded(self) -> list[dict[str, Any]]:
        """The empty result `empty_response` gives, as events: the prompt did not fit."""
        if self._items:
            raise RuntimeError("context_length_exceeded after output was streamed")
        events = self.start()
        final = empty_response(self.request, self.model, self.ids, self._created_at)
        self._close_items(final["output"], events)
        return events + self._end(final)

    # ---- events ------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _item_event(self, kind: str, item: _Item, **fields: Any) -> dict[str, Any]:
        """An event about the contents of one output item (its text, a summary, its arguments)."""
        event = {
            "type": kind,
            "sequence_number": self._sequence,
            "item_id": item.id,
            "output_index": item.output_index,
            **fields,
        }
        self._sequence += 1
        return event

    def _shell(self, status: str) -> dict[str, Any]:
        shell = response_shell(
            self.request, self.model, self._created_at or time.time(), status, self.ids.response
        )
        shell["output"] = []
        shell["usage"] = None
        return shell

    def _end(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        self.response = final
        kind = (
            "response.completed"
            if final["status"] == "completed" or self.incomplete_as_completed
            else "response.incomplete"
        )
        return [self._event(kind, response=final)]

    def _open(self, kind: str, item_id: str | None) -> _Item:
        item = _Item(kind, item_id, len(self._items))
        self._items.append(item)
        return item

    def _announce(self, item: _Item, events: list[dict[str, Any]]) -> None:
        events.append(
            self._event(
                "response.output_item.added",
                output_index=item.output_index,
                item=item.snapshot("in_progress"),
            )
        )
        if item.kind == "message":
            item.texts.append([])
            events.append(
                self._item_event(
                    "response.content_part.added",
                    item,
                    content_index=0,
                    part=dict(_EMPTY_PART),
                )
            )

    def _message_item(self, events: list[dict[str, Any]]) -> _Item:
        if self._message is None:
            self._message = self._open("message", self.ids.message)
            self._announce(self._message, events)
        return self._message

    def _text_delta(self, text: str, events: list[dict[str, Any]]) -> None:
        item = self._message_item(events)
        item.texts[0].append(text)
        events.append(
            self._item_event(
                "response.output_text.delta",
                item,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )

    def _text(self, piece: str, events: list[dict[str, Any]]) -> None:
        if self._splitter is None:
            self._text_delta(piece, events)
        else:
            self._steps(self._splitter.feed(piece), events)

    def _steps(self, steps: list[ThinkStep], events: list[dict[str, Any]]) -> None:
        for kind, text in steps:
            if kind == TEXT:
                self._text_delta(text, events)
            elif kind == OPEN:
                self._summary_open(events)
            elif kind == THINK:
                self._summary_delta(text, events)
            elif kind == CLOSE:
                self._summary_done(events)

    def _summary_open(self, events: list[dict[str, Any]]) -> None:
        if self._reasoning is None:
            self._reasoning = self._open("reasoning", self.ids.reasoning)
            self._announce(self._reasoning, events)
        self._summary_part_added(self._reasoning, events)

    def _summary_part_added(self, item: _Item, events: list[dict[str, Any]]) -> None:
        item.texts.append([])
        item.open_summary = True
        events.append(
            self._item_event(
                "response.reasoning_summary_part.added",
                item,
                summary_index=len(item.texts) - 1,
                part={"type": "summary_text", "text": ""},
            )
        )

    def _summary_delta(self, text: str, events: list[dict[str, Any]]) -> None:
        item = self._reasoning
        assert item is not None and item.open_summary
        item.texts[-1].append(text)
        events.append(
            self._item_event(
                "response.reasoning_summary_text.delta",
                item,
                summary_index=len(item.texts) - 1,
                delta=text,
            )
        )

    def _summary_done(self, events: list[dict[str, Any]]) -> None:
        item = self._reasoning
        assert item is not None and item.open_summary
        item.open_summary = False
        index = len(item.texts) - 1
        text = item.text(index)
        events.append(
            self._item_event("response.reasoning_summary_text.done", item, summary_index=index, text=text)
        )
        part = {"type": "summary_text", "text": text}
        events.append(
            self._item_event("response.reasoning_summary_part.done", item, summary_index=index, part=part)
        )

    def _tool_call(self, call: dict[str, Any], events: list[dict[str, Any]]) -> None:
        index = call.get("index", len(self._calls))
        slot = self._calls.get(index)
        if slot is None:
            slot = self._calls[index] = _Call()
        if call.get("id"):
            slot.id = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            slot.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            slot.pending.append(arguments)
        if slot.item is None:
            if slot.id is None or slot.name is None:
                return  # announce once id and name are known (vLLM sends both first)
            slot.item = self._open("function_call", slot.id)
            slot.item.call_id = slot.id
            slot.item.name = slot.name
            slot.item.texts.append([])
            self._announce(slot.item, events)
        if slot.pending:
            self._arguments_delta(slot.item, "".join(slot.pending), events)
            slot.pending = []

    def _arguments_delta(self, item: _Item, text: str, events: list[dict[str, Any]]) -> None:
        item.texts[0].append(text)
        events.append(
            self._item_event(
                "response.function_call_arguments.delta",
                item,
                delta=text,
            )
        )

    # ---- the end -----------------------------------------------------------------------

    def _close_items(self, output: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Announce the final items the stream has not shown, then close every item with the
        final object's values (a streamed item the final object lacks closes as streamed)."""
        streamed = {(item.kind, item.id) for item in self._items}
        for final_item in output:
            kind = final_item["type"]
            if (kind, final_item.get("id")) in streamed:
                continue
            item = self._open(kind, final_item.get("id"))
            if kind == "function_call":
                item.call_id = final_item.get("call_id")
                item.name = final_item.get("name")
                item.texts.append([])
            self._announce(item, events)
            if kind == "message":
                self._message = item
            elif kind == "reasoning":
                self._reasoning = item
        finals = {(item["type"], item.get("id")): item for item in output}
        for item in self._items:
            final_item = finals.get((item.kind, item.id))
            if item.kind == "message":
                self._close_message(item, final_item, events)
            elif item.kind == "reasoning":
                self._close_reasoning(item, final_item, events)
            else:
                self._close_call(item, final_item, events)
            item.done = True

    def _item_done(self, item: _Item, final_item: dict[str, Any], events: list[dict[str, Any]]) -> None:
        events.append(
            self._event("response.output_item.done", output_index=item.output_index, item=final_item)
        )

    def _close_message(
        self, item: _Item, final_item: dict[str, Any] | None, events: list[dict[str, Any]]
    ) -> None:
        final_item = final_item or item.snapshot("incomplete")
        part = final_item["content"][0]
        sent = item.text()
        if part["text"].startswith(sent) and len(part["text"]) > len(sent):
            self._text_delta(part["text"][len(sent) :], events)
        text = part["text"]
        events.append(
            self._item_event("response.output_text.done", item, content_index=0, text=text, logprobs=[])
        )
        events.append(self._item_event("response.content_part.done", item, content_index=0, part=part))
        self._item_done(item, final_item, events)

    def _close_reasoning(
        self, item: _Item, final_item: dict[str, Any] | None, events: list[dict[str, Any]]
    ) -> None:
        if item.open_summary:
            self._summary_done(events)
        summaries = (final_item or {}).get("summary") or []
        for index in range(len(item.texts), len(summaries)):
            self._summary_part_added(item, events)
            self._summary_delta(summaries[index]["text"], events)
            self._summary_done(events)
        self._item_done(item, final_item or item.snapshot("incomplete"), events)

    def _close_call(
        self, item: _Item, final_item: dict[str, Any] | None, events: list[dict[str, Any]]
    ) -> None:
        final_item = final_item or item.snapshot("incomplete")
        arguments = final_item.get("arguments") or ""
        sent = item.text()
        if arguments.startswith(sent) and len(arguments) > len(sent):
            self._arguments_delta(item, arguments[len(sent) :], events)
        events.append(
            self._item_event(
                "response.function_call_arguments.done",
                item,
                arguments=arguments,
            )
        )
        self._item_done(item, final_item, events)


def empty_response_events(
    request: dict[str, Any], *, model: str, incomplete_as_completed: bool = False
) -> list[dict[str, Any]]:
    """A context-length overflow before anything was streamed, as a whole stream of events."""
    return ResponsesStream(
        request, model=model, incomplete_as_completed=incomplete_as_completed
    ).context_length_exceeded()
