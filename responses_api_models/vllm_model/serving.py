"""The adapter's request logic: convert, route, call vLLM, add token information.

No FastAPI here: handlers in app.py parse the HTTP request and hand plain dicts to these
methods, so the logic is testable with a mocked upstream alone.
"""

from __future__ import annotations

from typing import Any

from nemo_gym.conversion import (
    ConversionError,
    ConversionOptions,
    UpstreamFormatError,
    chat_to_response,
    empty_response,
    responses_to_chat,
)
from nemo_gym.conversion.chat_to_responses import (
    chat_completion_for_caller,
    empty_chat_completion,
    first_choice,
)
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream
from nemo_gym.conversion.tokens import generation_tokens, prompt_tokens_from
from nemo_gym.server.errors import APIError
from nemo_gym.upstream import ContextLengthExceeded, UpstreamPool
from responses_api_models.vllm_model.config import VLLMModelConfig

_CHAT = "/chat/completions"


class VLLMServing:
    def __init__(self, config: VLLMModelConfig, pool: UpstreamPool) -> None:
        self.config = config
        self.pool = pool
        self.options = ConversionOptions(
            model=config.model,
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
        )
        self.token_mode = config.return_token_id_information
        self.inline_ids = config.request_prompt_and_generation_token_ids
        self._extra_body = dict(config.extra_body or {})
        self._overrides = dict(config.sampling_overrides or {})
        if config.chat_template_kwargs:
            self._extra_body.setdefault("chat_template_kwargs", config.chat_template_kwargs)

    def _finalize(self, body: dict[str, Any]) -> dict[str, Any]:
        """extra_body under the request, sampling_overrides over it, then the token flags."""
        if self._extra_body:
            body = {**self._extra_body, **body}
        if self._overrides:
            body.update(self._overrides)
        body["model"] = self.config.model
        if self.token_mode:
            body["logprobs"] = True
            body["top_logprobs"] = 0
            body["return_tokens_as_token_ids"] = True
            if self.inline_ids:
                body["return_token_ids"] = True
        return body

    def _tokenize_body(self, body: dict[str, Any]) -> dict[str, Any]:
        tokenize: dict[str, Any] = {"model": self.config.model, "messages": body["messages"]}
        for key in ("tools", "chat_template_kwargs"):
            if body.get(key) is not None:
                tokenize[key] = body[key]
        return tokenize

    async def _generate(
        self, body: dict[str, Any], session_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if not self.token_mode:
            chat, _ = await self.pool.post(_CHAT, body, session_id=session_id)
            return chat, None
        if self.inline_ids:
            chat, _ = await self.pool.post(_CHAT, body, session_id=session_id)
            prompt_ids = prompt_tokens_from(chat, "inline")
        else:
            # /tokenize goes out beside the generation, on the same upstream, as one write on
            # an idle connection (no task); if that was not possible or did not work, or the
            # generation moved to another upstream, ask the one that answered afterwards.
            upstream = self.pool.route(session_id)
            tokenize_body = self._tokenize_body(body)
            pending = self.pool.post_nowait("/tokenize", tokenize_body, upstream, at_root=True)
            try:
                chat, used = await self.pool.post(_CHAT, body, session_id=session_id, upstream=upstream)
            except BaseException:
                if pending is not None:
                    self.pool.abandon(pending)
                raise
            tokenized = None
            if pending is not None:
                if used is upstream:
                    tokenized = await self.pool.nowait_result(pending)
                else:
                    self.pool.abandon(pending)
            if tokenized is None:
                tokenized, _ = await self.pool.post("/tokenize", tokenize_body, upstream=used, at_root=True)
            prompt_ids = prompt_tokens_from(tokenized, "tokenize")
        ids, log_probs = generation_tokens(first_choice(chat))
        return chat, {
            "prompt_token_ids": prompt_ids,
            "generation_token_ids": ids,
            "generation_log_probs": log_probs,
        }

    async def responses(self, params: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        try:
            body = self._finalize(responses_to_chat(params, self.options))
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        try:
            chat, token_info = await self._generate(body, session_id)
            return chat_to_response(
                chat,
                params,
                model=self.config.model,
                uses_reasoning_parser=self.config.uses_reasoning_parser,
                token_info=token_info,
            )
        except ContextLengthExceeded:
            return empty_response(params, self.config.model)
        except UpstreamFormatError as exc:
            raise APIError(502, exc.message) from None

    async def chat_completions(self, body: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' is required and must be a non-empty list", param="messages")
        if body.get("stream"):
            raise APIError(
                400, "streaming is not supported by this server; send stream=false", param="stream"
            )
        try:
            upstream_messages = chat_messages_for_upstream(messages, self.options)
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        body = self._finalize({**body, "messages": upstream_messages})
        try:
            chat, token_info = await self._generate(body, session_id)
            return chat_completion_for_caller(
                chat,
                model=self.config.model,
                uses_reasoning_parser=self.config.uses_reasoning_parser,
                token_info=token_info,
            )
        except ContextLengthExceeded:
            return empty_chat_completion(self.config.model)
        except UpstreamFormatError as exc:
            raise APIError(502, exc.message) from None
