"""A vLLM chat completion stream, chunk by chunk: what to send our caller, and what it adds up to.

`ChatAccumulator` folds chunks into the chat completion a non-streaming request would have
returned, so the non-streaming conversions (`chat_to_response`, `generation_tokens`) build the
final objects and a streamed answer can be checked against an unstreamed one.

`ChatStream` is the `/v1/chat/completions` stream: each upstream chunk goes out with the same
changes `chat_completion_for_caller` makes to a whole answer (our model name; vLLM's reasoning
field folded into `content` as a leading `<think>…</think>`, or a misconfiguration error when
the adapter does not expect a reasoning parser), and in token mode the token fields go on the
last chunk that has a choice, in its `delta`, which is where the accumulated message gets them.

Pure: parsed dicts in, dicts out; the caller does the I/O.
"""

from __future__ import annotations

from typing import Any

from nemo_gym.conversion.chat_to_responses import REASONING_PARSER_MISCONFIGURED, empty_chat_completion
from nemo_gym.conversion.errors import UpstreamFormatError
from nemo_gym.conversion.think import THINK_CLOSE, THINK_OPEN
from nemo_gym.conversion.tokens import GenerationTokens, generation_tokens, prompt_tokens_from
from nemo_gym.exceptions import UpstreamError, error_body_of
from nemo_gym.protocol.tokens import TokenInfo

_REASONING_KEYS = ("reasoning_content", "reasoning")
_CHOICE_FIELDS = frozenset(("index", "delta", "logprobs", "token_ids", "finish_reason"))


def upstream_error_of(chunk: dict[str, Any]) -> UpstreamError | None:
    """vLLM reports a failure after the stream started as a data event with an error body
    (`{"error": {...}}`, or the flat `{"object": "error", ...}` of older versions)."""
    body = error_body_of(chunk)
    if body is None:
        return None
    code = body.code
    status = code if isinstance(code, int) and 400 <= code < 600 else 502
    message = body.message or "the upstream reported an error in the middle of the stream"
    return UpstreamError(status, message, type=body.type, param=body.param)


def check_chunk(chunk: Any) -> dict[str, Any]:
    if not isinstance(chunk, dict):
        raise UpstreamFormatError("upstream stream event is not a JSON object")
    if "error" in chunk or chunk.get("object") == "error":
        error = upstream_error_of(chunk)
        if error is not None:
            raise error
    return chunk


class _Choice:
    __slots__ = (
        "index",
        "role",
        "text",
        "saw_content",
        "reasoning",
        "extra_delta",
        "tools",
        "logprobs",
        "token_ids",
        "finish_reason",
        "extra",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.text: list[str] = []
        self.saw_content = False
        self.reasoning: dict[str, list[str]] = {}
        self.extra_delta: dict[str, Any] = {}
        self.tools: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.token_ids: list[int] | None = None
        self.finish_reason: str | None = None
        self.extra: dict[str, Any] = {}

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        # One text field is the common delta: skip the general walk for it.
        if len(delta) == 1 and type(value := next(iter(delta.values()))) is str:
            key = next(iter(delta))
            if key == "content":
                self.saw_content = True
                if value:
                    self.text.append(value)
            elif key in _REASONING_KEYS:
                self.reasoning.setdefault(key, []).append(value)
            else:
                self._delta_field(key, value)
        else:
            self._delta(delta)
        logprobs = choice.get("logprobs")
        if logprobs is not None and isinstance(logprobs.get("content"), list):
            if self.logprobs is None:
                self.logprobs = []
            self.logprobs.extend(logprobs["content"])
        token_ids = choice.get("token_ids")
        if token_ids is not None and isinstance(token_ids, list):
            if self.token_ids is None:
                self.token_ids = []
            self.token_ids.extend(token_ids)
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        if len(choice) > len(_CHOICE_FIELDS) or not choice.keys() <= _CHOICE_FIELDS:
            self._extra_fields(choice)

    def _extra_fields(self, choice: dict[str, Any]) -> None:
        """Choice fields vLLM adds beyond the standard ones keep their last non-null value."""
        for key in choice.keys() - _CHOICE_FIELDS:
            value = choice[key]
            if value is not None or key not in self.extra:
                self.extra[key] = value

    def _delta_field(self, key: str, value: Any) -> None:
        if value is not None:
            previous = self.extra_delta.get(key)
            self.extra_delta[key] = (
                previous + value if isinstance(previous, str) and isinstance(value, str) else value
            )

    def _delta(self, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if key == "content":
                if isinstance(value, str):
                    self.saw_content = True
                    if value:
                        self.text.append(value)
            elif key == "role":
                if value:
                    self.role = value
            elif key in _REASONING_KEYS:
                if isinstance(value, str):
                    self.reasoning.setdefault(key, []).append(value)
            elif key == "tool_calls":
                for call in value or ():
                    self._tool(call)
            else:
                self._delta_field(key, value)

    def _tool(self, call: dict[str, Any]) -> None:
        index = call.get("index", len(self.tools))
        slot = self.tools.get(index)
        if slot is None:
            slot = self.tools[index] = {"id": None, "type": "function", "name": None, "arguments": []}
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            slot["arguments"].append(function["arguments"])

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.text) if self.saw_content else None,
        }
        for key, pieces in self.reasoning.items():
            message[key] = "".join(pieces)
        message.update(self.extra_delta)
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": slot["id"],
                    "type": slot["type"],
                    "function": {"name": slot["name"], "arguments": "".join(slot["arguments"])},
                }
                for _, slot in sorted(self.tools.items())
            ]
        choice: dict[str, Any] = {
            "index": self.index,
            "message": message,
            "logprobs": None if self.logprobs is None else {"content": self.logprobs},
            "finish_reason": self.finish_reason,
        }
        if self.token_ids is not None:
            choice["token_ids"] = self.token_ids
        choice.update(self.extra)
        return choice


class ChatAccumulator:
    """Chunks in, the equivalent non-streaming chat completion out (`result()`).

    Content pieces concatenate (`content` stays null if no chunk had a string content),
    reasoning fields concatenate under their own names, tool calls merge by `index` (id, type
    and name from the chunk that has them, argument fragments joined), log-prob entries and
    `token_ids` concatenate, the last non-null `finish_reason` and `usage` win, and other
    top-level fields (`prompt_token_ids`, `system_fingerprint`, …) keep their last non-null value.
    """

    __slots__ = ("_head", "_choices", "usage", "chunks")

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def add(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        for key, value in chunk.items():
            if key == "choices":
                for choice in value or ():
                    index = choice.get("index", 0)
                    slot = self._choices.get(index)
                    if slot is None:
                        slot = self._choices[index] = _Choice(index)
                    slot.add(choice)
            elif key == "usage":
                if value is not None:
                    self.usage = value
            elif key != "object" and (value is not None or key not in self._head):
                self._head[key] = value

    def choice0(self) -> dict[str, Any]:
        slot = self._choices.get(0)
        return (slot or _Choice(0)).result()

    def result(self) -> dict[str, Any]:
        head = dict(self._head)
        completion: dict[str, Any] = {
            "id": head.pop("id", None),
            "object": "chat.completion",
            "created": head.pop("created", None),
            "model": head.pop("model", None),
            "choices": [slot.result() for _, slot in sorted(self._choices.items())],
            "usage": self.usage,
        }
        completion.update(head)
        return completion

    @property
    def prompt_token_ids(self) -> Any:
        """The stream's own `prompt_token_ids` (vLLM sends them on the first chunk with
        `return_token_ids`), or None."""
        return self._head.get("prompt_token_ids")

    def generation(self) -> GenerationTokens:
        """Generation ids and log-probs of choice 0 (`generation_tokens`, same checks).

        With a usage chunk (`stream_options.include_usage`) the token count is checked against
        it: a stream without `return_token_ids` silently drops the tokens that add no text."""
        tokens = generation_tokens(self.choice0())
        counted = (self.usage or {}).get("completion_tokens")
        if len(self._choices) == 1 and isinstance(counted, int) and counted != len(tokens.ids):
            raise UpstreamFormatError(
                f"the upstream stream carried {len(tokens.ids)} generation tokens but its usage counts {counted}: "
                "vLLM streams no chunk for a token that adds no text (think tags, tool-call markup) unless "
                "the request sets return_token_ids: true, so those ids and log-probs are missing"
            )
        return tokens

    def token_info(self, prompt_token_ids: list[int] | None = None) -> TokenInfo:
        """The three token fields, as the non-streaming path builds them: `generation()`, and
        the prompt ids given or, when None, the stream's own (`return_token_ids`)."""
        ids, log_probs = self.generation()
        if prompt_token_ids is None:
            prompt_token_ids = prompt_tokens_from(self._head, "inline")
        return {
            "prompt_token_ids": prompt_token_ids,
            "generation_token_ids": ids,
            "generation_log_probs": log_probs,
        }


class ReasoningFolder:
    """vLLM's separate reasoning deltas → `content` pieces wrapped in one `<think>…</think>`,
    which is `wrap_think(reasoning) + content` of the whole answer, cut where the deltas fall.

    The tag opens on the first non-empty reasoning piece and closes on the first delta that
    carries anything else (content, a tool call) or at the end. A reasoning piece arriving after
    the tag closed cannot move in front of text already sent: it is appended in a block of its
    own (the accumulated answer then differs from the unstreamed one; vLLM does not do this).
    """

    __slots__ = ("uses_reasoning_parser", "open")

    def __init__(self, uses_reasoning_parser: bool) -> None:
        self.uses_reasoning_parser = uses_reasoning_parser
        self.open = False

    def fold(self, delta: dict[str, Any]) -> str | None:
        """The content piece for this delta (None when it carries neither content nor reasoning)."""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        content = delta.get("content")
        if reasoning:
            if not self.uses_reasoning_parser:
                raise UpstreamFormatError(REASONING_PARSER_MISCONFIGURED)
            piece = reasoning if self.open else THINK_OPEN + reasoning
            self.open = True
            if content or delta.get("tool_calls"):
                self.open = False
                return piece + THINK_CLOSE + (content or "")
            return piece
        if self.open and (content or delta.get("tool_calls")):
            self.open = False
            return THINK_CLOSE + (content or "")
        return content

    def close(self) -> str:
        if self.open:
            self.open = False
            return THINK_CLOSE
        return ""


class ChatStream:
    """One `/v1/chat/completions` stream. `feed` each upstream chunk and send what it returns;
    at the upstream's end call `finish` (token mode: with the token info) and send that, then
    `DONE_BYTES`. `accumulated` is the upstream answer as one non-streaming completion.

    In token mode the chunk where choice 0 finishes, and every chunk after it (the usage chunk),
    are held until `finish`, so the token fields can ride on it: they are only known at the end,
    and holding costs no latency because the end follows at once. `send_usage=False` drops the
    usage-only chunk (for when the adapter asked upstream for usage the caller did not ask for).
    """

    __slots__ = ("model", "token_mode", "send_usage", "accumulated", "_folder", "_held", "_finished0")

    def __init__(
        self, *, model: str, uses_reasoning_parser: bool, token_mode: bool = False, send_usage: bool = True
    ) -> None:
        self.model = model
        self.token_mode = token_mode
        self.send_usage = send_usage
        self.accumulated = ChatAccumulator()
        self._folder = ReasoningFolder(uses_reasoning_parser)
        self._held: list[dict[str, Any]] = []
        self._finished0 = False

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks to send now (the chunk itself, changed: pass one this stream may keep).
        Raises `UpstreamError` for an error event in the stream and `UpstreamFormatError` for a
        reasoning field the adapter is not configured for."""
        chunk = check_chunk(chunk)
        self.accumulated.add(chunk)
        out = self._convert(chunk)
        if out is None:
            return []
        if self.token_mode and (self._finished0 or self._finishes0(out)):
            self._finished0 = True
            self._held.append(out)
            return []
        return [out]

    def token_info(self, prompt_token_ids: list[int] | None = None) -> TokenInfo:
        return self.accumulated.token_info(prompt_token_ids)

    def finish(self, token_info: TokenInfo | None = None) -> list[dict[str, Any]]:
        """The held chunks, the token fields on the last one with a choice 0. A reasoning block
        still open (the stream ended inside it) is closed in a chunk of its own."""
        out = self._held
        self._held = []
        closing = self._folder.close()
        if closing:
            out.insert(0, self._bare_chunk({"content": closing}))
        if token_info:
            for index in range(len(out) - 1, -1, -1):
                choices = out[index].get("choices") or []
                position = next((i for i, c in enumerate(choices) if c.get("index", 0) == 0), None)
                if position is not None:
                    choice = choices[position]
                    choices = list(choices)
                    choices[position] = {**choice, "delta": {**(choice.get("delta") or {}), **token_info}}
                    out[index] = {**out[index], "choices": choices}
                    break
            else:
                out.append(self._bare_chunk(dict(token_info)))
        return out

    def _bare_chunk(self, delta: dict[str, Any]) -> dict[str, Any]:
        head = self.accumulated._head
        return {
            "id": head.get("id"),
            "object": "chat.completion.chunk",
            "created": head.get("created"),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }

    @staticmethod
    def _finishes0(chunk: dict[str, Any]) -> bool:
        choices = chunk.get("choices")
        if not choices:
            return "usage" in chunk  # a usage-only chunk comes after every choice finished
        return any(c.get("index", 0) == 0 and c.get("finish_reason") is not None for c in choices)

    def _convert(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk changed in place: it is ours (parsed for this stream) and copying every
        chunk of every stream is the larger part of the cost."""
        choices = chunk.get("choices")
        if not choices:
            if not self.send_usage and chunk.get("usage") is not None:
                return None
        else:
            for choice in choices:
                if choice.get("index", 0) == 0:
                    self._convert_choice0(choice)
        chunk["model"] = self.model
        return chunk

    def _convert_choice0(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        folder = self._folder
        if not folder.open and "reasoning" not in delta and "reasoning_content" not in delta:
            return
        piece = folder.fold(delta)
        if choice.get("finish_reason") is not None:
            piece = (piece or "") + folder.close()
        delta.pop("reasoning", None)
        delta.pop("reasoning_content", None)
        if piece is not None:
            delta["content"] = piece
        choice["delta"] = delta


def empty_chat_chunks(model: str, *, include_usage: bool = False) -> list[dict[str, Any]]:
    """What a context-length overflow streams on the chat endpoint: the chunks that add up to
    `empty_chat_completion` (no content, `finish_reason: "length"`, zero usage when asked for)."""
    empty = empty_chat_completion(model)
    head = {key: empty[key] for key in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    chunks = [
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
            ],
        },
        {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]},
    ]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": empty["usage"]})
    return chunks


def chat_error_chunk(
    message: str, *, type: str = "server_error", param: str | None = None, code: Any = None
) -> dict[str, Any]:
    """An error after a chat stream started, as vLLM and OpenAI send it (a data event with an
    `error` body; the `openai` client raises it as `APIError`). Send `DONE_BYTES` after it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
