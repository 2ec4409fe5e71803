"""The simulator's chat templates: how each model family renders a conversation, and how its
model writes a turn. Each reproduces what makes that family's token ids hard to keep exact:

- `chatml` (the default; Qwen2/Hermes style): re-rendered tool-call arguments get ", "/": "
  separators while generations are compact.
- `qwen3`: Qwen3's template. It drops the reasoning (and the empty think block) of assistant turns
  before the latest user message, and with `enable_thinking: false` its generation prompt ends
  in an empty think block that history never repeats.
- `mistral`: Mistral-Nemo's template. The model's tool call is unmarked JSON (guided decoding),
  the template marks it with `[TOOL_CALLS]` and adds the call id; call ids must be nine
  characters (others raise the template's own error); tools and the system prompt go before
  the last user message only; no generation prompt.
- `r1` (DeepSeek-R1 style): the generation prompt opens a think block (`<｜Assistant｜><think>\\n`)
  that history renders neither with the reasoning nor at all.

Texts are written here from each template's documented behaviour (the real files are not part
of this repository); token ids come from the simulator's tokenizer, so only structure matters.
"""

from __future__ import annotations

import json
import random
import re
import string
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

VOCAB = 150_000
CHATML_SPECIAL = {
    "<|im_start|>": 1666,
    "<|im_end|>": 1667,
    "<think>": 1668,
    "</think>": 1669,
    "<tool_call>": 1670,
    "</tool_call>": 1671,
}
QWEN3_SPECIAL = {**CHATML_SPECIAL, "<tool_response>": 1672, "</tool_response>": 1673}
MISTRAL_SPECIAL = {
    "<s>": 1,
    "</s>": 2,
    "[INST]": 3,
    "[/INST]": 4,
    "[TOOL_CALLS]": 5,
    "[AVAILABLE_TOOLS]": 6,
    "[/AVAILABLE_TOOLS]": 7,
    "[TOOL_RESULTS]": 8,
    "[/TOOL_RESULTS]": 9,
}
R1_SPECIAL = {
    "<｜begin▁of▁sentence｜>": 100,
    "<｜end▁of▁sentence｜>": 101,
    "<｜User｜>": 102,
    "<｜Assistant｜>": 103,
    "<think>": 1668,
    "</think>": 1669,
    "<｜tool▁calls▁begin｜>": 104,
    "<｜tool▁calls▁end｜>": 105,
    "<｜tool▁call▁begin｜>": 106,
    "<｜tool▁call▁end｜>": 107,
    "<｜tool▁sep｜>": 108,
    "<｜tool▁output▁begin｜>": 109,
    "<｜tool▁output▁end｜>": 110,
}
_PIECE = re.compile(r"\s+|\w+|[^\w\s]")
CALL_ID_ERROR = "Tool call IDs should be alphanumeric strings with length 9!"
ALTERNATION_ERROR = (
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
)


class TemplateError(ValueError):
    """The template's own `raise_exception`: vLLM answers it with a 400 carrying its text."""


class Tokenizer:
    """Deterministic ids: special tokens get fixed ids, other pieces a crc32 hash."""

    def __init__(self, special: dict[str, int]) -> None:
        self.special = special
        self._re = re.compile("|".join(re.escape(s) for s in sorted(special, key=len, reverse=True)))

    def __call__(self, text: str) -> tuple[list[int], list[str]]:
        ids: list[int] = []
        pieces: list[str] = []
        pos = 0
        for match in self._re.finditer(text):
            _plain_pieces(text[pos : match.start()], ids, pieces)
            ids.append(self.special[match.group()])
            pieces.append(match.group())
            pos = match.end()
        _plain_pieces(text[pos:], ids, pieces)
        return ids, pieces


def _plain_pieces(text: str, ids: list[int], pieces: list[str]) -> None:
    for piece in _PIECE.findall(text):
        ids.append(2000 + zlib.crc32(piece.encode()) % (VOCAB - 2000))
        pieces.append(piece)


# A generated turn as typed segments: how each piece streams and what it is in the answer.
REASONING = "reasoning"  # reasoning text (the `reasoning` field under a reasoning parser)
THINK_TAG = "think"  # a think tag (no text under a reasoning parser, content otherwise)
CONTENT = "content"
CALL_HEAD = "call_head"  # a call's opening markup; its first piece streams the call's id and name
CALL_ARGS = "call_args"  # a call's arguments, streamed as fragments
MARKUP = "markup"  # the rest of a call's markup (no text)


@dataclass(frozen=True)
class Segment:
    kind: str
    text: str
    call: int = -1


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _arguments(arguments: Any) -> str:
    """As a template's `tojson` over the parsed arguments (vLLM parses them before rendering):
    ", " and ": " separators, so compact generated arguments come back re-spaced."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        out.append({"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
    return out


class Template:
    name = "base"
    special: dict[str, int] = CHATML_SPECIAL
    eos = "<|im_end|>"

    def __init__(self) -> None:
        self.tokenize = Tokenizer(self.special)

    @property
    def eos_id(self) -> int:
        return self.special[self.eos]

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """The prompt text. `continue_final_message` renders the conversation finished and cuts
        it after the last message's content, as vLLM's /tokenize does."""
        text = self._render(
            messages, tools, add_generation_prompt and not continue_final_message, kwargs or {}
        )
        if continue_final_message and messages:
            last = _text(messages[-1].get("content")).strip()
            cut = text.rfind(last) if last else -1
            if cut >= 0:
                text = text[: cut + len(last)]
        return text

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        kwargs: dict[str, Any],
    ) -> str:
        raise NotImplementedError

    def generation(
        self, reasoning: str | None, content: str, calls: list[dict[str, Any]], kwargs: dict[str, Any]
    ) -> list[Segment]:
        """The turn the model writes (the end-of-turn token follows it)."""
        out: list[Segment] = []
        if reasoning is not None:
            out += [
                Segment(THINK_TAG, "<think>"),
                Segment(REASONING, reasoning),
                Segment(THINK_TAG, "</think>"),
            ]
        if content:
            out.append(Segment(CONTENT, content))
        for i, call in enumerate(calls):
            out += [
                Segment(CALL_HEAD, f'<tool_call>\n{{"name": "{call["name"]}", "arguments": ', i),
                Segment(CALL_ARGS, call["arguments"], i),
                Segment(MARKUP, "}\n</tool_call>", i),
            ]
        return out

    def call_id(self) -> str:
        return f"chatcmpl-tool-{uuid.uuid4().hex[:16]}"


class ChatML(Template):
    """Qwen2/Hermes style: every message `<|im_start|>role\\n…<|im_end|>\\n`, reasoning and calls inline."""

    name = "chatml"

    def _render(self, messages, tools, add_generation_prompt, kwargs):  # type: ignore[no-untyped-def]
        out = []
        if tools:
            specs = "\n".join(orjson.dumps(t.get("function", t)).decode() for t in tools)
            out.append(f"<|im_start|>system\n# Tools\n<tools>\n{specs}\n</tools><|im_end|>\n")
        for message in messages:
            text = _text(message.get("content"))
            if message.get("reasoning"):
                text = f"<think>{message['reasoning']}</think>{text}"
            text += "".join(_hermes_call(call) for call in _calls(message))
            out.append(f"<|im_start|>{message.get('role')}\n{text}<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)


def _hermes_call(call: dict[str, Any]) -> str:
    """A history tool call as ChatML and Qwen3 render it (arguments re-serialized, not as generated)."""
    return f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {_arguments(call["arguments"])}}}\n</tool_call>'


class Qwen3(Template):
    name = "qwen3"
    special = QWEN3_SPECIAL

    def _render(self, messages, tools, add_generation_prompt, kwargs):  # type: ignore[no-untyped-def]
        out = [self._system(messages, tools)]
        last_query = self._last_query(messages)
        for index, m in enumerate(messages):
            role = m.get("role")
            if role == "user" or (role == "system" and index > 0):
                out.append(f"<|im_start|>{role}\n{_text(m.get('content'))}<|im_end|>\n")
            elif role == "assistant":
                out.append(self._assistant(m, index > last_query, index == len(messages) - 1))
            elif role == "tool":
                out.append(self._tool_response(messages, index))
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
            if kwargs.get("enable_thinking") is False:
                out.append("<think>\n\n</think>\n\n")
        return "".join(out)

    @staticmethod
    def _system(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        """The system turn: the first message's system prompt, then the tools."""
        first_system = bool(messages) and messages[0].get("role") == "system"
        if not tools:
            return (
                f"<|im_start|>system\n{_text(messages[0].get('content'))}<|im_end|>\n" if first_system else ""
            )
        out = ["<|im_start|>system\n"]
        if first_system:
            out.append(_text(messages[0].get("content")) + "\n\n")
        out.append("# Tools\n\n<tools>")
        out += ["\n" + json.dumps(tool, ensure_ascii=False) for tool in tools]
        out.append("\n</tools><|im_end|>\n")
        return "".join(out)

    @staticmethod
    def _last_query(messages: list[dict[str, Any]]) -> int:
        """The index of the latest user message that is not a wrapped tool response."""
        for index in range(len(messages) - 1, -1, -1):
            text = _text(messages[index].get("content"))
            wrapped = text.startswith("<tool_response>") and text.endswith("</tool_response>")
            if messages[index].get("role") == "user" and not wrapped:
                return index
        return len(messages) - 1

    @staticmethod
    def _assistant(m: dict[str, Any], after_last_query: bool, last: bool) -> str:
        """An assistant turn: its reasoning kept only after the latest user message."""
        content = _text(m.get("content"))
        reasoning = m.get("reasoning")
        if not isinstance(reasoning, str):
            reasoning = ""
            if "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
        if after_last_query and (last or reasoning):
            out = [
                f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
                + content.lstrip("\n")
            ]
        else:
            out = ["<|im_start|>assistant\n" + content]
        for n, call in enumerate(_calls(m)):
            if (n == 0 and content) or n > 0:
                out.append("\n")
            out.append(_hermes_call(call))
        out.append("<|im_end|>\n")
        return "".join(out)

    @staticmethod
    def _tool_response(messages: list[dict[str, Any]], index: int) -> str:
        """Consecutive tool results share one user turn."""
        out = []
        if index == 0 or messages[index - 1].get("role") != "tool":
            out.append("<|im_start|>user")
        out.append(f"\n<tool_response>\n{_text(messages[index].get('content'))}\n</tool_response>")
        if index == len(messages) - 1 or messages[index + 1].get("role") != "tool":
            out.append("<|im_end|>\n")
        return "".join(out)

    def generation(self, reasoning, content, calls, kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("enable_thinking") is False:
            reasoning = None  # the prompt closed the think block already
        return super().generation(reasoning, content, calls, kwargs)


class Mistral(Template):
    name = "mistral"
    special = MISTRAL_SPECIAL
    eos = "</s>"

    def _render(self, messages, tools, add_generation_prompt, kwargs):  # type: ignore[no-untyped-def]
        system = None
        loop = messages
        if messages and messages[0].get("role") == "system":
            system, loop = _text(messages[0].get("content")), messages[1:]
        _check_alternation(loop)
        users = [i for i, m in enumerate(loop) if m.get("role") == "user"]
        out = ["<s>"]
        for index, m in enumerate(loop):
            role = m.get("role")
            if role == "user":
                if tools and users and index == users[-1]:
                    out.append(_mistral_tools(tools))
                text = _text(m.get("content"))
                if index == len(loop) - 1 and system is not None:
                    text = f"{system}\n\n{text}"
                out.append(f"[INST]{text}[/INST]")
            elif m.get("tool_calls"):
                out.append("[TOOL_CALLS][" + ", ".join(_mistral_call(call) for call in _calls(m)) + "]</s>")
            elif role == "assistant":
                out.append(_text(m.get("content")) + "</s>")
            elif role == "tool":
                call_id = _mistral_call_id(m.get("tool_call_id"))
                out.append(
                    f'[TOOL_RESULTS]{{"content": {_text(m.get("content"))}, "call_id": "{call_id}"}}[/TOOL_RESULTS]'
                )
            else:
                raise TemplateError(
                    "Only user and assistant roles are supported, with the exception of an initial optional system message!"
                )
        return "".join(out)

    def generation(self, reasoning, content, calls, kwargs):  # type: ignore[no-untyped-def]
        # No reasoning; a forced call is plain JSON (no [TOOL_CALLS] marker, no id).
        out: list[Segment] = [Segment(CONTENT, content)] if content else []
        for i, call in enumerate(calls):
            head = ("[" if i == 0 else ", ") + f'{{"name": "{call["name"]}", "arguments": '
            out += [
                Segment(CALL_HEAD, head, i),
                Segment(CALL_ARGS, call["arguments"], i),
                Segment(MARKUP, "}" + ("]" if i == len(calls) - 1 else ""), i),
            ]
        return out

    def call_id(self) -> str:
        return "".join(random.choices(string.ascii_letters + string.digits, k=9))


def _check_alternation(messages: list[dict[str, Any]]) -> None:
    """Mistral's template: user and assistant turns alternate (tool traffic aside)."""
    turn = 0
    for m in messages:
        if m.get("role") == "tool" or m.get("tool_calls"):
            continue
        if (m.get("role") == "user") != (turn % 2 == 0):
            raise TemplateError(ALTERNATION_ERROR)
        turn += 1


def _mistral_tools(tools: list[dict[str, Any]]) -> str:
    specs = []
    for tool in tools:
        fn = tool.get("function", tool)
        items = ", ".join(
            f'"{k}": "{v}"' if isinstance(v, str) else f'"{k}": {json.dumps(v)}'
            for k, v in fn.items()
            if k != "return"
        )
        specs.append('{"type": "function", "function": {' + items + "}}")
    return "[AVAILABLE_TOOLS][" + ", ".join(specs) + "][/AVAILABLE_TOOLS]"


def _mistral_call_id(call_id: Any) -> str:
    if not isinstance(call_id, str) or len(call_id) != 9:
        raise TemplateError(CALL_ID_ERROR)
    return call_id


def _mistral_call(call: dict[str, Any]) -> str:
    call_id = _mistral_call_id(call["id"])
    parsed = json.loads(_arguments(call["arguments"]))
    fn = json.dumps({"name": call["name"], "arguments": parsed}, ensure_ascii=False)
    return fn[:-1] + f', "id": "{call_id}"}}'


class R1(Template):
    name = "r1"
    special = R1_SPECIAL
    eos = "<｜end▁of▁sentence｜>"

    def _render(self, messages, tools, add_generation_prompt, kwargs):  # type: ignore[no-untyped-def]
        out = ["<｜begin▁of▁sentence｜>"]
        for m in messages:
            if m.get("role") == "system":
                out.append(_text(m.get("content")))
        for m in messages:
            role = m.get("role")
            if role == "user":
                out.append("<｜User｜>" + _text(m.get("content")))
            elif role == "assistant":
                content = _text(m.get("content")).split("</think>")[-1]  # history keeps no reasoning
                out.append("<｜Assistant｜>" + content)
                calls = _calls(m)
                if calls:
                    out.append("<｜tool▁calls▁begin｜>")
                    for call in calls:
                        out.append(
                            f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{call['name']}\n```json\n"
                            f"{_arguments(call['arguments'])}\n```<｜tool▁call▁end｜>"
                        )
                    out.append("<｜tool▁calls▁end｜>")
                out.append("<｜end▁of▁sentence｜>")
            elif role == "tool":
                out.append(f"<｜tool▁output▁begin｜>{_text(m.get('content'))}<｜tool▁output▁end｜>")
        if add_generation_prompt:
            out.append("<｜Assistant｜><think>\n")
        return "".join(out)

    def generation(self, reasoning, content, calls, kwargs):  # type: ignore[no-untyped-def]
        # The prompt opened the think block: the model writes the reasoning and closes it.
        out = [Segment(REASONING, (reasoning or "") + "\n"), Segment(THINK_TAG, "</think>")]
        if content:
            out.append(Segment(CONTENT, "\n\n" + content))
        if calls:
            out.append(Segment(MARKUP, "<｜tool▁calls▁begin｜>"))
        for i, call in enumerate(calls):
            out += [
                Segment(
                    CALL_HEAD, f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{call['name']}\n```json\n", i
                ),
                Segment(CALL_ARGS, call["arguments"], i),
                Segment(MARKUP, "\n```<｜tool▁call▁end｜>", i),
            ]
        if calls:
            out.append(Segment(MARKUP, "<｜tool▁calls▁end｜>"))
        return out


TEMPLATES: dict[str, type[Template]] = {t.name: t for t in (ChatML, Qwen3, Mistral, R1)}
