"""The adapter's request logic: convert, route, call vLLM, add token information.

No FastAPI here: handlers in app.py parse the HTTP request and hand plain dicts to these
methods, so the logic is testable with a mocked upstream alone. Failures are raised as they
are (`nemo_gym.exceptions`); the request path turns them into the caller's answer.
"""

from __future__ import annotations

import logging
from typing import Any

from nemo_gym.conversion import (
    ConversionOptions,
    chat_to_response,
    empty_response,
    responses_to_chat,
)
from nemo_gym.conversion.call_ids import (
    CallIdFormat,
    call_id_mapping,
    history_call_ids,
    is_valid,
    map_history,
    unmap_chat,
)
from nemo_gym.conversion.chat_to_responses import chat_completion_for_caller, empty_chat_completion
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream
from nemo_gym.exceptions import APIError
from nemo_gym.upstream import ContextLengthExceeded, UpstreamPool
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.ledger import TokenAnswer, TokenLedger
from responses_api_models.vllm_model.template_probe import TemplateProbe

_CHAT = "/chat/completions"

logger = logging.getLogger("nemo_gym.vllm_model")


class VLLMServing:
    def __init__(self, config: VLLMModelConfig, pool: UpstreamPool) -> None:
        self.config = config
        self.pool = pool
        self.options = ConversionOptions(
            model=config.model,
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
            reasoning_field=config.reasoning_field,
        )
        self.token_mode = config.return_token_id_information
        self._extra_body = dict(config.extra_body or {})
        self._overrides = dict(config.sampling_overrides or {})
        if config.chat_template_kwargs:
            self._extra_body.setdefault("chat_template_kwargs", config.chat_template_kwargs)
        self.probe = TemplateProbe(pool, config.model, self._extra_body.get("chat_template_kwargs"))
        self.ledger = TokenLedger(config, pool, self.probe)
        self._call_id_format = (
            None if config.tool_call_id_format == "auto" else CallIdFormat(config.tool_call_id_format)
        )
        self.context_length_fallbacks = 0  # answered with an empty result instead of an error

    def drift_counts(self, index: int) -> dict[str, Any]:
        return self.ledger.drift_counts(index)

    def finalize(self, body: dict[str, Any]) -> dict[str, Any]:
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
        return body

    async def map_call_ids(self, body: dict[str, Any], session_id: str | None) -> dict[str, str]:
        """In place: the history's call ids as the template takes them (`tool_call_id_format`);
        returns upstream id → caller id for the answer."""
        ids = history_call_ids(body["messages"])
        if not ids:
            return {}
        fmt = self._call_id_format
        if fmt is None:  # auto: ask the template only when some id would not suit a strict one
            if all(is_valid(i, CallIdFormat.ALNUM9) for i in ids):
                return {}
            fmt = await self.probe.call_id_format(self.pool.route(session_id))
        mapping = call_id_mapping(ids, fmt)
        if mapping:
            body["messages"] = map_history(body["messages"], mapping)
        return {new: old for old, new in mapping.items()}

    async def _generate(
        self, body: dict[str, Any], session_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        reverse = await self.map_call_ids(body, session_id)
        if not self.token_mode:
            chat, _ = await self.pool.post(_CHAT, body, session_id=session_id)
            unmap_chat(chat, reverse)
            return chat, None
        plan = await self.ledger.plan(body, session_id)
        chat, used = await self.pool.post(_CHAT, plan.body, session_id=session_id, upstream=plan.upstream)
        unmap_chat(chat, reverse)
        report = await self.ledger.settle(plan, TokenAnswer.from_chat(chat, used))
        return chat, report.fields()

    async def responses(self, params: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        body = self.finalize(responses_to_chat(params, self.options))
        try:
            chat, token_info = await self._generate(body, session_id)
        except ContextLengthExceeded:
            self.context_length_fallbacks += 1
            return empty_response(params, self.config.model)
        return chat_to_response(
            chat,
            params,
            model=self.config.model,
            uses_reasoning_parser=self.config.uses_reasoning_parser,
            token_info=token_info,
        )

    @staticmethod
    def check_messages(body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' is required and must be a non-empty list", param="messages")

    async def chat_completions(self, body: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        """The non-streaming answer (`stream: true` goes to `streaming.StreamingServing`)."""
        self.check_messages(body)
        if body.get("stream") not in (None, False):
            raise APIError(400, "'stream' must be true or false", param="stream")
        upstream_messages = chat_messages_for_upstream(body["messages"], self.options)
        body = self.finalize({**body, "messages": upstream_messages})
        try:
            chat, token_info = await self._generate(body, session_id)
        except ContextLengthExceeded:
            self.context_length_fallbacks += 1
            return empty_chat_completion(self.config.model)
        return chat_completion_for_caller(
            chat,
            model=self.config.model,
            uses_reasoning_parser=self.config.uses_reasoning_parser,
            token_info=token_info,
        )
