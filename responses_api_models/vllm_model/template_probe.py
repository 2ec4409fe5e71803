"""What the served chat template does, asked of the upstream with tiny `/tokenize` calls.

Two things the adapter cannot know from a model name: which ids the template puts after an
assistant message (its closing tokens, needed to splice a cut-off turn and to find where new
messages start), and whether it accepts OpenAI-style tool-call ids (Mistral's refuses anything
but nine alphanumeric characters). Both are properties of the template, so they are asked once
per process, at the first request that needs them. An upstream that is failing right now
(5xx, unreachable) is asked again next time; a template that cannot answer (4xx) is remembered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nemo_gym.conversion.call_ids import CallIdFormat
from nemo_gym.conversion.prefix import SpliceError, closing_tokens
from nemo_gym.conversion.tokens import prompt_tokens_from
from nemo_gym.exceptions import APIError, UpstreamFormatError
from nemo_gym.upstream.pool import Upstream, UpstreamPool

logger = logging.getLogger("nemo_gym.vllm_model")

# A conversation ending in an assistant message, rendered finished and left open: the
# difference is the template's closing tokens.
_CLOSING_PROBE = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
# An OpenAI-style call id (28 characters) and a nine-character alphanumeric one (Mistral's).
_OPENAI_ID = "call_8f3KqZ2mW7xN4vB9pL1sT6y"
_ALNUM9_ID = "a1B2c3D4e"
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
}


def _tool_conversation(call_id: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "a"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "b"},
    ]


class TemplateProbe:
    def __init__(self, pool: UpstreamPool, model: str, chat_template_kwargs: dict[str, Any] | None) -> None:
        self.pool = pool
        self.model = model
        self.kwargs = chat_template_kwargs
        self._closing: list[int] | None = None
        self._closing_known = False
        self._call_ids: CallIdFormat | None = None
        self._closing_lock = asyncio.Lock()
        self._call_ids_lock = asyncio.Lock()

    def _body(self, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **extra}
        if self.kwargs is not None:
            body["chat_template_kwargs"] = self.kwargs
        return body

    async def _tokens(self, body: dict[str, Any], upstream: Upstream) -> list[int]:
        answer, _ = await self.pool.post("/tokenize", body, upstream=upstream, at_root=True)
        return prompt_tokens_from(answer, "tokenize")

    async def closing(self, upstream: Upstream) -> list[int] | None:
        """The template's ids after an assistant message's content, or None if it cannot say."""
        if self._closing_known:
            return self._closing
        async with self._closing_lock:
            if self._closing_known:
                return self._closing
            closed_body = self._body(_CLOSING_PROBE, add_generation_prompt=False)
            try:
                closed, unclosed = await asyncio.gather(
                    self._tokens(closed_body, upstream),
                    self._tokens({**closed_body, "continue_final_message": True}, upstream),
                )
                self._closing = closing_tokens(closed, unclosed)
            except (APIError, UpstreamFormatError, SpliceError) as exc:
                if isinstance(exc, APIError) and exc.status >= 500:
                    return None  # failing right now: ask again at the next splice
                logger.warning(
                    "could not learn the chat template's closing tokens from %s (%s); splicing then needs "
                    "end_of_turn_token_ids or an earlier generation that stopped on its own",
                    upstream.base_url,
                    exc,
                )
            self._closing_known = True
            return self._closing

    async def call_id_format(self, upstream: Upstream) -> CallIdFormat:
        """KEEP when the template takes an OpenAI-style id; ALNUM9 when it refuses that and takes
        a nine-character alphanumeric one; KEEP (ids passed as they are) when it takes neither."""
        if self._call_ids is not None:
            return self._call_ids
        async with self._call_ids_lock:
            if self._call_ids is not None:
                return self._call_ids
            tools = {"tools": [_PROBE_TOOL], "add_generation_prompt": True}
            try:
                await self._tokens(self._body(_tool_conversation(_OPENAI_ID), **tools), upstream)
                self._call_ids = CallIdFormat.KEEP
                return self._call_ids
            except (APIError, UpstreamFormatError) as exc:
                if isinstance(exc, APIError) and exc.status >= 500:
                    return CallIdFormat.KEEP
                refused = getattr(exc, "message", str(exc))
            try:
                await self._tokens(self._body(_tool_conversation(_ALNUM9_ID), **tools), upstream)
            except (APIError, UpstreamFormatError) as exc:
                if isinstance(exc, APIError) and exc.status >= 500:
                    return CallIdFormat.KEEP
                logger.warning(
                    "the chat template of %s refuses a tool-call conversation (%s); call ids are sent as they are",
                    upstream.base_url,
                    refused,
                )
                self._call_ids = CallIdFormat.KEEP
                return self._call_ids
            logger.info(
                "the chat template of %s refuses OpenAI-style tool-call ids (%s): mapping each to nine "
                "alphanumeric characters on the way upstream, and back in the answer",
                upstream.base_url,
                refused,
            )
            self._call_ids = CallIdFormat.ALNUM9
            return self._call_ids
