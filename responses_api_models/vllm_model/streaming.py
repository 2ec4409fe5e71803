"""`stream: true` on both endpoints: vLLM's chat stream, converted as it arrives.

The upstream call is made before anything is sent, so a failure before the answer starts is an
ordinary HTTP error (retried by the pool's rules when they allow), and a context-length error is
the same empty result as without streaming, as a stream. After the first byte nothing is re-sent:
an upstream failure mid-stream ends the stream with an error event. A caller hanging up cancels
the producer (the request path watches for it) and closes the upstream connection.

In token mode the upstream is asked for `return_token_ids` (vLLM sends no chunk for a token that
adds no text without it) and for usage (to check the token count), and the token fields — with
the drift report when earlier turns' tokens were carried — ride on the last chunk or on
`response.completed`, as they ride on the non-streaming answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from nemo_gym.conversion.call_ids import unmap_chat
from nemo_gym.conversion.chat_stream import ChatStream, chat_error_chunk, empty_chat_chunks
from nemo_gym.conversion.responses_stream import ResponsesStream
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream, responses_to_chat
from nemo_gym.conversion.sse import DONE_BYTES, ChunkReader, encode_chunk, encode_chunks, encode_events
from nemo_gym.exceptions import ContextLengthExceeded, NemoGymError, api_error_for
from nemo_gym.server.request_path import StreamedAnswer
from nemo_gym.upstream.pool import Upstream
from responses_api_models.vllm_model.ledger import SplicePlan, TokenAnswer
from responses_api_models.vllm_model.serving import VLLMServing

logger = logging.getLogger("nemo_gym.vllm_model")
_CHAT = "/chat/completions"


class _Upstream:
    """One opened upstream stream: its chunks, who answers, the token plan, the call-id map."""

    __slots__ = ("chunks", "used", "plan", "reverse")

    def __init__(self, chunks: Any, used: Upstream, plan: SplicePlan | None, reverse: dict[str, str]) -> None:
        self.chunks = chunks
        self.used = used
        self.plan = plan
        self.reverse = reverse


class StreamingServing:
    def __init__(self, serving: VLLMServing) -> None:
        self.serving = serving
        self.model = serving.config.model
        self.uses_reasoning_parser = serving.config.uses_reasoning_parser

    # ---- the two endpoints -------------------------------------------------------------
    async def responses(self, params: dict[str, Any], session_id: str | None) -> StreamedAnswer:
        request = {k: v for k, v in params.items() if k not in ("stream", "stream_options")}
        body = self.serving.finalize(responses_to_chat(request, self.serving.options))
        events = ResponsesStream(request, model=self.model, uses_reasoning_parser=self.uses_reasoning_parser)
        try:
            opened = await self._open(body, session_id, caller_usage=True)
        except ContextLengthExceeded:
            self.serving.context_length_fallbacks += 1
            return StreamedAnswer(_once(encode_events(events.context_length_exceeded())))
        return StreamedAnswer(self._responses_events(events, opened))

    async def chat_completions(self, body: dict[str, Any], session_id: str | None) -> StreamedAnswer:
        messages = chat_messages_for_upstream(body["messages"], self.serving.options)
        caller_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_body = self.serving.finalize({**body, "messages": messages})
        stream = ChatStream(
            model=self.model,
            uses_reasoning_parser=self.uses_reasoning_parser,
            token_mode=self.serving.token_mode,
            send_usage=caller_usage,
        )
        try:
            opened = await self._open(upstream_body, session_id, caller_usage=caller_usage)
        except ContextLengthExceeded:
            self.serving.context_length_fallbacks += 1
            return StreamedAnswer(
                _once(encode_chunks(empty_chat_chunks(self.model, include_usage=caller_usage)) + DONE_BYTES)
            )
        return StreamedAnswer(self._chat_chunks(stream, opened))

    # ---- the upstream call ---------------------------------------------------------------
    async def _open(self, body: dict[str, Any], session_id: str | None, *, caller_usage: bool) -> _Upstream:
        serving = self.serving
        body["stream"] = True
        reverse = await serving.map_call_ids(body, session_id)
        plan: SplicePlan | None = None
        upstream: Upstream | None = None
        if serving.token_mode or caller_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if serving.token_mode:
            plan = await serving.ledger.plan(body, session_id)
            body, upstream = plan.body, plan.upstream
        chunks, used = await serving.pool.post_stream(_CHAT, body, session_id=session_id, upstream=upstream)
        return _Upstream(chunks, used, plan, reverse)

    async def _token_info(self, accumulated: Any, opened: _Upstream) -> dict[str, Any] | None:
        """The token fields (and drift report) from the whole stream, as non-streaming builds them."""
        if opened.plan is None:
            return None
        answer = TokenAnswer.from_stream(accumulated, opened.used)
        report = await self.serving.ledger.settle(opened.plan, answer, streaming=True)
        return report.fields()

    # ---- producers -------------------------------------------------------------------------
    async def _responses_events(self, events: ResponsesStream, opened: _Upstream) -> AsyncIterator[bytes]:
        reader = ChunkReader()
        chunks, reverse = opened.chunks, opened.reverse
        try:
            yield encode_events(events.start())
            async for data in chunks:
                out: list[dict[str, Any]] = []
                for chunk in reader.feed(data):
                    unmap_chat(chunk, reverse, "delta")
                    out += events.feed(chunk)
                if out:
                    yield encode_events(out)
            reader.close()
            yield encode_events(events.finish(await self._token_info(events.accumulated, opened)))
        except NemoGymError as exc:
            yield encode_events(events.fail(_failed(exc, opened.used)))
        finally:
            await chunks.aclose()

    async def _chat_chunks(self, stream: ChatStream, opened: _Upstream) -> AsyncIterator[bytes]:
        reader = ChunkReader()
        chunks, reverse = opened.chunks, opened.reverse
        try:
            async for data in chunks:
                parts = []
                for chunk in reader.feed(data):
                    unmap_chat(chunk, reverse, "delta")
                    parts.extend(encode_chunk(c) for c in stream.feed(chunk))
                if parts:
                    yield b"".join(parts)
            reader.close()
            yield (
                encode_chunks(stream.finish(await self._token_info(stream.accumulated, opened))) + DONE_BYTES
            )
        except NemoGymError as exc:
            yield encode_chunk(chat_error_chunk(_failed(exc, opened.used))) + DONE_BYTES
        finally:
            await chunks.aclose()


def _failed(exc: NemoGymError, used: Upstream) -> str:
    """The message a stream that broke after its start ends with (its status is already sent)."""
    message = api_error_for(exc, used.base_url).message
    logger.warning("stream from %s failed: %s", used.base_url, message)
    return message


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
