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

from nemo_gym.conversion.chat_stream import ChatStream, chat_error_chunk, empty_chat_chunks
from nemo_gym.conversion.prefix import CarriedTokens, carried_tokens, drift_report
from nemo_gym.conversion.responses_stream import ResponsesStream
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream, responses_to_chat
from nemo_gym.conversion.sse import DONE_BYTES, ChunkReader, encode_chunk, encode_chunks, encode_events
from nemo_gym.exceptions import (
    APIError,
    ContextLengthExceeded,
    ConversionError,
    TransportError,
    UpstreamFormatError,
    api_error_for,
)
from nemo_gym.server.request_path import StreamedAnswer
from nemo_gym.upstream.pool import Upstream
from responses_api_models.vllm_model.serving import VLLMServing

logger = logging.getLogger("nemo_gym.vllm_model")
_CHAT = "/chat/completions"


class _TokenPlan:
    """What a token-mode stream needs at its end to build the token fields and drift report."""

    __slots__ = ("carried", "note", "prompt")

    def __init__(self, carried: CarriedTokens | None, prompt: list[int] | None, note: str | None) -> None:
        self.carried = carried
        self.prompt = prompt  # the spliced prompt sent, or None (rendered by the template)
        self.note = note


class StreamingServing:
    def __init__(self, serving: VLLMServing) -> None:
        self.serving = serving
        self.model = serving.config.model
        self.uses_reasoning_parser = serving.config.uses_reasoning_parser

    # ---- the two endpoints -------------------------------------------------------------
    async def responses(self, params: dict[str, Any], session_id: str | None) -> StreamedAnswer:
        request = {k: v for k, v in params.items() if k not in ("stream", "stream_options")}
        try:
            body = self.serving._finalize(responses_to_chat(request, self.serving.options))
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        events = ResponsesStream(request, model=self.model, uses_reasoning_parser=self.uses_reasoning_parser)
        try:
            chunks, used, plan = await self._open(body, session_id, caller_usage=True)
        except ContextLengthExceeded:
            self.serving.context_length_fallbacks += 1
            return StreamedAnswer(_once(encode_events(events.context_length_exceeded())))
        return StreamedAnswer(self._responses_events(events, chunks, used, plan))

    async def chat_completions(self, body: dict[str, Any], session_id: str | None) -> StreamedAnswer:
        try:
            messages = chat_messages_for_upstream(body["messages"], self.serving.options)
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        caller_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_body = self.serving._finalize({**body, "messages": messages})
        stream = ChatStream(
            model=self.model,
            uses_reasoning_parser=self.uses_reasoning_parser,
            token_mode=self.serving.token_mode,
            send_usage=caller_usage,
        )
        try:
            chunks, used, plan = await self._open(upstream_body, session_id, caller_usage=caller_usage)
        except ContextLengthExceeded:
            self.serving.context_length_fallbacks += 1
            return StreamedAnswer(
                _once(encode_chunks(empty_chat_chunks(self.model, include_usage=caller_usage)) + DONE_BYTES)
            )
        return StreamedAnswer(self._chat_chunks(stream, chunks, used, plan))

    # ---- the upstream call ---------------------------------------------------------------
    async def _open(
        self, body: dict[str, Any], session_id: str | None, *, caller_usage: bool
    ) -> tuple[Any, Upstream, _TokenPlan | None]:
        serving = self.serving
        body["stream"] = True
        plan: _TokenPlan | None = None
        upstream: Upstream | None = None
        if serving.token_mode:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            body["return_token_ids"] = True
            carried = carried_tokens(body["messages"])
            prompt = note = None
            if carried is not None and serving.prefix_mode != "off":
                prompt, note, upstream = await serving.splice_plan(body, session_id, carried)
                if prompt is not None:
                    kv = body.get("kv_transfer_params")
                    body["kv_transfer_params"] = (
                        {**kv, "prompt_token_ids": prompt}
                        if isinstance(kv, dict)
                        else {"prompt_token_ids": prompt}
                    )
            plan = _TokenPlan(carried, prompt, note)
        elif caller_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            chunks, used = await serving.pool.post_stream(
                _CHAT, body, session_id=session_id, upstream=upstream
            )
        except UpstreamFormatError as exc:
            raise APIError(502, exc.message) from None
        return chunks, used, plan

    def _token_info(self, accumulated: Any, used: Upstream, plan: _TokenPlan) -> dict[str, Any]:
        """The token fields (and drift report) from the whole stream, as non-streaming builds them."""
        serving = self.serving
        info = accumulated.token_info(None)
        serving._learn_eot(accumulated.choice0(), info["generation_token_ids"])
        carried = plan.carried
        if carried is None:
            return info
        returned = info["prompt_token_ids"]
        if plan.prompt is not None:
            report = serving.spliced_outcome(carried, plan.prompt, returned, used, streaming=True)
        else:
            report = drift_report(carried, returned, spliced=False, note=plan.note)
        serving._count(used, report)
        info["token_drift"] = report
        return info

    # ---- producers -------------------------------------------------------------------------
    async def _responses_events(
        self, events: ResponsesStream, chunks: Any, used: Upstream, plan: _TokenPlan | None
    ) -> AsyncIterator[bytes]:
        reader = ChunkReader()
        try:
            yield encode_events(events.start())
            async for data in chunks:
                out: list[dict[str, Any]] = []
                for chunk in reader.feed(data):
                    out += events.feed(chunk)
                if out:
                    yield encode_events(out)
            reader.close()
            token_info = self._token_info(events.accumulated, used, plan) if plan is not None else None
            yield encode_events(events.finish(token_info))
        except (APIError, UpstreamFormatError, TransportError) as exc:
            message = _message(exc, used)
            logger.warning("stream from %s failed: %s", used.base_url, message)
            yield encode_events(events.fail(message))
        finally:
            await chunks.aclose()

    async def _chat_chunks(
        self, stream: ChatStream, chunks: Any, used: Upstream, plan: _TokenPlan | None
    ) -> AsyncIterator[bytes]:
        reader = ChunkReader()
        try:
            async for data in chunks:
                out = b"".join(encode_chunk(c) for chunk in reader.feed(data) for c in stream.feed(chunk))
                if out:
                    yield out
            reader.close()
            token_info = self._token_info(stream.accumulated, used, plan) if plan is not None else None
            yield encode_chunks(stream.finish(token_info)) + DONE_BYTES
        except (APIError, UpstreamFormatError, TransportError) as exc:
            message = _message(exc, used)
            logger.warning("stream from %s failed: %s", used.base_url, message)
            yield encode_chunk(chat_error_chunk(message)) + DONE_BYTES
        finally:
            await chunks.aclose()


def _message(exc: Exception, used: Upstream) -> str:
    if isinstance(exc, UpstreamFormatError):
        return exc.message
    return api_error_for(exc, used.base_url).message


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
