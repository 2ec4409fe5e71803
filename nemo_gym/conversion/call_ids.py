"""Tool-call ids for chat templates that constrain them (pure, no I/O).

Mistral's templates reject any call id that is not exactly nine alphanumeric characters, while
OpenAI-style callers send ids like `call_8f3K…` (28 characters) and vLLM's hermes parser makes
`chatcmpl-tool-…`. Each id in the history is replaced, on the way upstream only, by a valid one
derived from it: the same caller id always gives the same upstream id (so re-rendered history
is stable from turn to turn), two caller ids never share one, and ids that are valid already
stay as they are. The answer's ids are mapped back, so the caller only ever sees its own.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class CallIdFormat(StrEnum):
    KEEP = "keep"  # the template takes any id
    ALNUM9 = "alnum9"  # exactly nine characters from [0-9A-Za-z] (Mistral)


def is_valid(call_id: str, fmt: CallIdFormat) -> bool:
    if fmt is CallIdFormat.KEEP:
        return True
    return len(call_id) == 9 and call_id.isascii() and call_id.isalnum()


def _derive(call_id: str, attempt: int) -> str:
    digest = hashlib.sha256(f"{attempt}:{call_id}".encode()).digest()
    number = int.from_bytes(digest[:12], "big")
    out = []
    for _ in range(9):
        number, rest = divmod(number, 62)
        out.append(_ALNUM[rest])
    return "".join(out)


def history_call_ids(messages: list[dict[str, Any]]) -> list[str]:
    """Every call id in the history, in order of first appearance."""
    seen: dict[str, None] = {}
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    seen.setdefault(call["id"])
        elif role == "tool" and isinstance(message.get("tool_call_id"), str):
            seen.setdefault(message["tool_call_id"])
    return list(seen)


def call_id_mapping(ids: list[str], fmt: CallIdFormat) -> dict[str, str]:
    """caller id → upstream id for the ids that must change.

    Taken in order of first appearance, so an id keeps its mapping when more history follows:
    a valid id keeps itself unless an earlier id already took that value, and an invalid one
    gets the first derived value not taken."""
    if fmt is CallIdFormat.KEEP or all(is_valid(i, fmt) for i in ids):
        return {}
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    for call_id in ids:
        if is_valid(call_id, fmt) and call_id not in taken:
            taken.add(call_id)
            continue
        attempt = 0
        new = _derive(call_id, attempt)
        while new in taken or new in ids:
            attempt += 1
            new = _derive(call_id, attempt)
        taken.add(new)
        mapping[call_id] = new
    return mapping


def map_history(messages: list[dict[str, Any]], mapping: dict[str, str]) -> list[dict[str, Any]]:
    """The messages with each mapped call id replaced (new dicts only where one changed)."""
    if not mapping:
        return messages
    out = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                {**call, "id": mapping[call["id"]]}
                if isinstance(call, dict) and call.get("id") in mapping
                else call
                for call in message["tool_calls"]
            ]
            message = {**message, "tool_calls": calls}
        elif role == "tool" and message.get("tool_call_id") in mapping:
            message = {**message, "tool_call_id": mapping[message["tool_call_id"]]}
        out.append(message)
    return out


def unmap_tool_calls(tool_calls: Any, reverse: dict[str, str]) -> None:
    """In place: upstream ids in a message's or delta's `tool_calls` back to the caller's."""
    if not reverse or not isinstance(tool_calls, list):
        return
    for call in tool_calls:
        if isinstance(call, dict):
            original = reverse.get(call.get("id"))  # type: ignore[arg-type]
            if original is not None:
                call["id"] = original


def unmap_chat(chat: dict[str, Any], reverse: dict[str, str], key: str = "message") -> None:
    """In place, on a chat completion (`key` "message") or a stream chunk (`key` "delta")."""
    if not reverse:
        return
    for choice in chat.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get(key), dict):
            unmap_tool_calls(choice[key].get("tool_calls"), reverse)
