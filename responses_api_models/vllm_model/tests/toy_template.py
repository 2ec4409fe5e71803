"""A toy ChatML template with readable token ids, and the chat answers of an upstream that
renders with it: what the adapter's token-ledger tests build their upstreams from."""

from __future__ import annotations

from typing import Any

IM_START, IM_END, NL = 1666, 1667, 198
EOT = IM_END
ROLE = {"system": 5, "user": 10, "assistant": 20, "tool": 40}
# Content ids of the toy template. The assistant's tool call re-renders as 30 32 33 where the
# model generated 30 31 (drift); "cold" is 41; a system prompt "S" is 6, "S2" is 7.
CONTENT = {"weather?": [], "cold": [41], "S": [6], "S2": [7], "hi": [], "x": [30, 32, 33]}
P1 = [IM_START, 10, IM_END, NL, IM_START, 20, NL]  # user turn, generation prompt
GEN1 = [30, 31, EOT]
TAIL = [NL, IM_START, 40, 41, IM_END, NL, IM_START, 20, NL]  # after the carried <|im_end|>
SPLICED = [*P1, *GEN1, *TAIL]
RENDERED = [*P1, 30, 32, 33, IM_END, *TAIL]  # the template's own rendering: drifts at index 8
OUTCOMES0 = dict.fromkeys(
    ("spliced", "conversation_changed", "template_unaligned", "upstream_ignores", "off"), 0
)


def render(
    messages: list[dict[str, Any]], gen: bool, cont: bool = False, think: bool = False, mark: bool = False
) -> list[int]:
    """`mark`: the last user message gets an 88 after its role (Mistral puts the tools there)."""
    ids: list[int] = []
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for i, m in enumerate(messages):
        role = m["role"]
        content = m.get("content") or ("x" if m.get("tool_calls") else "")
        ids += [IM_START, ROLE[role], *([88] if mark and i == last_user else [])]
        ids += [*([NL] if role == "assistant" else []), *CONTENT.get(content, [99]), IM_END, NL]
    if cont:
        return ids[:-2]
    if gen:
        ids += [IM_START, 20, NL, *([77] if think else [])]
    return ids


def chat(prompt_ids: list[int] | None, gen: list[int] = (7, EOT), finish: str = "stop") -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": finish,
                "stop_reason": None,
                "logprobs": {"content": [{"token": f"token_id:{t}", "logprob": -0.5} for t in gen]},
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": len(gen), "total_tokens": 2 + len(gen)},
        "prompt_token_ids": prompt_ids,
    }
