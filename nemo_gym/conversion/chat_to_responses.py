"""A vLLM Chat Completions response → a Responses API object."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from random import getrandbits as _getrandbits
from typing import Any

from nemo_gym.conversion.errors import UpstreamFormatError
from nemo_gym.conversion.think import split_think, wrap_think
from nemo_gym.protocol.tokens import TokenInfo

REASONING_PARSER_MISCONFIGURED = (
    "the upstream vLLM returned a separate reasoning field, but this adapter has uses_reasoning_parser: false. "
    "Either drop --reasoning-parser from `vllm serve` (so the think text stays in the output as the model wrote it) "
    "or set uses_reasoning_parser: true in the adapter config."
)
# Request fields echoed on the Response object, with the value used when the caller did not set them.
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": None,
    "parallel_tool_calls": True,
    "temperature": None,
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
}
_ECHO_IF_SET = (
    "text",
    "reasoning",
    "truncation",
    "user",
    "store",
    "service_tier",
    "top_logprobs",
    "background",
    "max_tool_calls",
)


def _random_hex() -> str:
    """128 random bits as hex. Ids must be unique, not secret: the PRNG (seeded from the OS)
    avoids a getrandom() syscall per id, which showed up at 2% of a request's CPU."""
    return f"{_getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class OutputIds:
    """The ids a Responses object gets. A stream announces its items before the object is
    built, so it draws them first and hands them to the builder; otherwise they are fresh."""

    response: str = field(default_factory=lambda: f"resp_{_random_hex()}")
    reasoning: str = field(default_factory=lambda: f"rs_{_random_hex()}")
    message: str = field(default_factory=lambda: f"msg_{_random_hex()}")


def reasoning_of(message: dict[str, Any], uses_reasoning_parser: bool) -> str | None:
    """vLLM's separate reasoning text (`reasoning`, or `reasoning_content` in older versions)."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and not uses_reasoning_parser:
        raise UpstreamFormatError(REASONING_PARSER_MISCONFIGURED)
    return reasoning or None


def first_choice(chat: dict[str, Any]) -> dict[str, Any]:
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamFormatError("upstream chat completion has no choices")
    choice = choices[0]
    if not isinstance(choice.get("message"), dict):
        raise UpstreamFormatError("upstream chat completion choice has no message")
    return choice


def _usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": chat_usage.get("prompt_tokens", 0),
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": chat_usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": chat_usage.get("total_tokens", 0),
    }


def response_shell(
    request: dict[str, Any], model: str, created_at: float, status: str, response_id: str | None = None
) -> dict[str, Any]:
    """Every field of a Responses object but `output` and `usage`."""
    response: dict[str, Any] = {
        "id": response_id or f"resp_{_random_hex()}",
        "object": "response",
        "created_at": created_at,
        "model": model,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
    }
    for key, default in _ECHO_DEFAULTS.items():
        value = request.get(key)
        response[key] = default if value is None else value
    for key in _ECHO_IF_SET:
        if request.get(key) is not None:
            response[key] = request[key]
    return response


def message_item(text: str, status: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or f"msg_{_random_hex()}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def chat_to_response(
    chat: dict[str, Any],
    request: dict[str, Any],
    *,
    model: str,
    uses_reasoning_parser: bool = True,
    token_info: TokenInfo | None = None,
    ids: OutputIds | None = None,
) -> dict[str, Any]:
    """Build the Responses object; `token_info` (ids and log-probs) goes on the last output item."""
    choice = first_choice(chat)
    message = choice["message"]
    text = message.get("content") or ""
    reasoning = reasoning_of(message, uses_reasoning_parser)
    if reasoning is not None:
        text = wrap_think(reasoning) + text
    summaries, rest = split_think(text) if uses_reasoning_parser else ([], text)
    tool_calls = message.get("tool_calls") or []
    incomplete = choice.get("finish_reason") == "length"

    output: list[dict[str, Any]] = []
    if summaries:
        output.append(
            {
                "id": ids.reasoning if ids else f"rs_{_random_hex()}",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": s} for s in summaries],
            }
        )
    if rest or not (summaries or tool_calls):
        output.append(
            message_item(rest, "incomplete" if incomplete else "completed", ids.message if ids else None)
        )
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": call.get("id"),
                "call_id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
                "status": "completed",
            }
        )
    if token_info:
        output[-1].update(token_info)

    response = response_shell(
        request,
        model,
        float(chat.get("created") or time.time()),
        "incomplete" if incomplete else "completed",
        ids.response if ids else None,
    )
    response["output"] = output
    response["usage"] = _usage(chat.get("usage"))
    return response


def empty_response(
    request: dict[str, Any], model: str, ids: OutputIds | None = None, created_at: float | None = None
) -> dict[str, Any]:
    """What a context-length overflow returns: one empty message, status incomplete, no tokens."""
    response = response_shell(
        request,
        model,
        time.time() if created_at is None else created_at,
        "incomplete",
        ids.response if ids else None,
    )
    response["output"] = [message_item("", "incomplete", ids.message if ids else None)]
    response["usage"] = {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    return response


def empty_chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{_random_hex()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chat_completion_for_caller(
    chat: dict[str, Any], *, model: str, uses_reasoning_parser: bool, token_info: TokenInfo | None
) -> dict[str, Any]:
    """Chat endpoint output: reasoning fields folded back into `<think>` content, tokens on the message."""
    choice = first_choice(chat)
    message = choice["message"]
    reasoning = reasoning_of(message, uses_reasoning_parser)
    if reasoning is not None or "reasoning" in message or "reasoning_content" in message:
        message = dict(message)
        message.pop("reasoning", None)
        message.pop("reasoning_content", None)
        if reasoning is not None:
            message["content"] = wrap_think(reasoning) + (message.get("content") or "")
    if token_info:
        message = {**message, **token_info}
    choice = {**choice, "message": message}
    return {**chat, "model": model, "choices": [choice, *chat["choices"][1:]]}
