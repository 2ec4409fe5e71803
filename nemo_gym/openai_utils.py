"""NeMo Gym's import path for the OpenAI wire models, and the judge/openai HTTP client.

Environments written for NeMo Gym import these names from here (``NeMoGymResponse``,
``NeMoGymResponseCreateParamsNonStreaming``, ...). The models live in `nemo_gym.protocol`; this
module re-exports them, together with the `openai` SDK types that NeMo Gym's module exposed the
same way (environments import ``Reasoning`` from here).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
)
from openai.types.chat.chat_completion import (
    Choice,
)
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseComputerToolCall,
    ResponseComputerToolCallOutputItem,
    ResponseCustomToolCall,
    ResponseCustomToolCallOutputItem,
    ResponseFileSearchToolCall,
    ResponseFunctionToolCallOutputItem,
    ResponseFunctionWebSearch,
    ResponseUsage,
)
from openai.types.responses.response_create_params import (
    Reasoning,
    ResponseIncludable,
    ResponsePromptParam,
    ResponseTextConfigParam,
    ToolChoice,
    ToolParam,
)
from openai.types.responses.response_input_item import (
    ComputerCallOutput,
    LocalShellCallOutput,
    McpApprovalResponse,
    ResponseCustomToolCallOutput,
)
from openai.types.responses.response_output_item import (
    ImageGenerationCall,
    LocalShellCall,
    McpApprovalRequest,
    McpCall,
    McpListTools,
)
from openai.types.responses.response_reasoning_item import (
    Summary,
)
from openai.types.responses.response_usage import (
    InputTokensDetails,
    OutputTokensDetails,
)
from pydantic import BaseModel, Field, PrivateAttr

from nemo_gym.protocol.chat import (
    NeMoGymChatCompletion,
    NeMoGymChatCompletionAssistantMessageForTrainingParam,
    NeMoGymChatCompletionAssistantMessageParam,
    NeMoGymChatCompletionContentPartFileParam,
    NeMoGymChatCompletionContentPartImageParam,
    NeMoGymChatCompletionContentPartInputAudioParam,
    NeMoGymChatCompletionContentPartParam,
    NeMoGymChatCompletionContentPartTextParam,
    NeMoGymChatCompletionContentPartVideoUrlParam,
    NeMoGymChatCompletionCreateParamsNonStreaming,
    NeMoGymChatCompletionDeveloperMessageParam,
    NeMoGymChatCompletionMessage,
    NeMoGymChatCompletionMessageForTraining,
    NeMoGymChatCompletionMessageParam,
    NeMoGymChatCompletionMessageToolCall,
    NeMoGymChatCompletionMessageToolCallFunctionParam,
    NeMoGymChatCompletionMessageToolCallParam,
    NeMoGymChatCompletionOutputMessage,
    NeMoGymChatCompletionSystemMessageParam,
    NeMoGymChatCompletionToolMessageParam,
    NeMoGymChatCompletionToolParam,
    NeMoGymChatCompletionUserMessageParam,
    NeMoGymChoice,
    NeMoGymFunction,
    NeMoGymFunctionDefinition,
    NeMoGymInputAudio,
)
from nemo_gym.protocol.items import (
    RESPONSES_TO_TRAIN,
    ItemStatus,
    NeMoGymComputerCallOutput,
    NeMoGymContent,
    NeMoGymEasyInputMessage,
    NeMoGymEasyInputMessageForTraining,
    NeMoGymFunctionCallOutput,
    NeMoGymImageGenerationCall,
    NeMoGymInputVideoPart,
    NeMoGymLocalShellCall,
    NeMoGymLocalShellCallOutput,
    NeMoGymMcpApprovalResponse,
    NeMoGymMessage,
    NeMoGymMessageForTraining,
    NeMoGymResponseCodeInterpreterToolCall,
    NeMoGymResponseComputerCallOutput,
    NeMoGymResponseComputerToolCall,
    NeMoGymResponseCustomToolCall,
    NeMoGymResponseCustomToolCallOutput,
    NeMoGymResponseCustomToolCallOutputItem,
    NeMoGymResponseFileSearchToolCall,
    NeMoGymResponseFunctionCallOutput,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseFunctionToolCallForTraining,
    NeMoGymResponseFunctionWebSearch,
    NeMoGymResponseInput,
    NeMoGymResponseInputAudio,
    NeMoGymResponseInputContentList,
    NeMoGymResponseInputContentPart,
    NeMoGymResponseInputFile,
    NeMoGymResponseInputImage,
    NeMoGymResponseInputItem,
    NeMoGymResponseInputText,
    NeMoGymResponseLocalShellCallOutput,
    NeMoGymResponseMcpApprovalRequest,
    NeMoGymResponseMcpApprovalResponse,
    NeMoGymResponseMcpCall,
    NeMoGymResponseMcpListTools,
    NeMoGymResponseOutputItem,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputMessageForTraining,
    NeMoGymResponseOutputRefusal,
    NeMoGymResponseOutputText,
    NeMoGymResponseReasoningItem,
    NeMoGymResponseReasoningItemForTraining,
    NeMoGymSummary,
    training_variant_of,
)
from nemo_gym.protocol.responses import (
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseInputTokensDetails,
    NeMoGymResponseOutputTokensDetails,
    NeMoGymResponseUsage,
    accumulate_response_usage,
)
from nemo_gym.protocol.tokens import (
    REQUIRED_TOKEN_METADATA_FIELDS,
    TOKEN_METADATA_FIELDS,
    RoutedExperts,
    TokenIDLogProbMixin,
    TokenIDLogProbTypedDictMixin,
)

__all__ = [
    "ChatCompletion",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ComputerCallOutput",
    "ImageGenerationCall",
    "InputTokensDetails",
    "ItemStatus",
    "LocalShellCall",
    "LocalShellCallOutput",
    "MAX_NUM_TRIES",
    "McpApprovalRequest",
    "McpApprovalResponse",
    "McpCall",
    "McpListTools",
    "NeMoGymAsyncOpenAI",
    "NeMoGymChatCompletion",
    "NeMoGymChatCompletionAssistantMessageForTrainingParam",
    "NeMoGymChatCompletionAssistantMessageParam",
    "NeMoGymChatCompletionContentPartFileParam",
    "NeMoGymChatCompletionContentPartImageParam",
    "NeMoGymChatCompletionContentPartInputAudioParam",
    "NeMoGymChatCompletionContentPartParam",
    "NeMoGymChatCompletionContentPartTextParam",
    "NeMoGymChatCompletionContentPartVideoUrlParam",
    "NeMoGymChatCompletionCreateParamsNonStreaming",
    "NeMoGymChatCompletionDeveloperMessageParam",
    "NeMoGymChatCompletionMessage",
    "NeMoGymChatCompletionMessageForTraining",
    "NeMoGymChatCompletionMessageParam",
    "NeMoGymChatCompletionMessageToolCall",
    "NeMoGymChatCompletionMessageToolCallFunctionParam",
    "NeMoGymChatCompletionMessageToolCallParam",
    "NeMoGymChatCompletionOutputMessage",
    "NeMoGymChatCompletionSystemMessageParam",
    "NeMoGymChatCompletionToolMessageParam",
    "NeMoGymChatCompletionToolParam",
    "NeMoGymChatCompletionUserMessageParam",
    "NeMoGymChoice",
    "NeMoGymComputerCallOutput",
    "NeMoGymContent",
    "NeMoGymEasyInputMessage",
    "NeMoGymEasyInputMessageForTraining",
    "NeMoGymFunction",
    "NeMoGymFunctionCallOutput",
    "NeMoGymFunctionDefinition",
    "NeMoGymImageGenerationCall",
    "NeMoGymInputAudio",
    "NeMoGymInputVideoPart",
    "NeMoGymLocalShellCall",
    "NeMoGymLocalShellCallOutput",
    "NeMoGymMcpApprovalResponse",
    "NeMoGymMessage",
    "NeMoGymMessageForTraining",
    "NeMoGymResponse",
    "NeMoGymResponseCodeInterpreterToolCall",
    "NeMoGymResponseComputerCallOutput",
    "NeMoGymResponseComputerToolCall",
    "NeMoGymResponseCreateParamsNonStreaming",
    "NeMoGymResponseCustomToolCall",
    "NeMoGymResponseCustomToolCallOutput",
    "NeMoGymResponseCustomToolCallOutputItem",
    "NeMoGymResponseFileSearchToolCall",
    "NeMoGymResponseFunctionCallOutput",
    "NeMoGymResponseFunctionToolCall",
    "NeMoGymResponseFunctionToolCallForTraining",
    "NeMoGymResponseFunctionWebSearch",
    "NeMoGymResponseInput",
    "NeMoGymResponseInputAudio",
    "NeMoGymResponseInputContentList",
    "NeMoGymResponseInputContentPart",
    "NeMoGymResponseInputFile",
    "NeMoGymResponseInputImage",
    "NeMoGymResponseInputItem",
    "NeMoGymResponseInputText",
    "NeMoGymResponseInputTokensDetails",
    "NeMoGymResponseLocalShellCallOutput",
    "NeMoGymResponseMcpApprovalRequest",
    "NeMoGymResponseMcpApprovalResponse",
    "NeMoGymResponseMcpCall",
    "NeMoGymResponseMcpListTools",
    "NeMoGymResponseOutputItem",
    "NeMoGymResponseOutputMessage",
    "NeMoGymResponseOutputMessageForTraining",
    "NeMoGymResponseOutputRefusal",
    "NeMoGymResponseOutputText",
    "NeMoGymResponseOutputTokensDetails",
    "NeMoGymResponseReasoningItem",
    "NeMoGymResponseReasoningItemForTraining",
    "NeMoGymResponseUsage",
    "NeMoGymSummary",
    "OutputTokensDetails",
    "PERMANENT_AUTH_CODES",
    "PERMANENT_QUOTA_CODES",
    "PermanentEndpointError",
    "RATE_LIMIT_ERROR_CODES",
    "REQUIRED_TOKEN_METADATA_FIELDS",
    "RESPONSES_TO_TRAIN",
    "RETRY_ERROR_CODES",
    "Reasoning",
    "Response",
    "ResponseCodeInterpreterToolCall",
    "ResponseComputerToolCall",
    "ResponseComputerToolCallOutputItem",
    "ResponseCustomToolCall",
    "ResponseCustomToolCallOutput",
    "ResponseCustomToolCallOutputItem",
    "ResponseFileSearchToolCall",
    "ResponseFunctionToolCallOutputItem",
    "ResponseFunctionWebSearch",
    "ResponseIncludable",
    "ResponsePromptParam",
    "ResponseTextConfigParam",
    "ResponseUsage",
    "RoutedExperts",
    "Summary",
    "TOKEN_METADATA_FIELDS",
    "TokenIDLogProbMixin",
    "TokenIDLogProbTypedDictMixin",
    "ToolChoice",
    "ToolParam",
    "accumulate_response_usage",
    "training_variant_of",
]


# ---------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------

# Transient statuses: rate limiting / overloaded gateways, then other retryable ones.
RATE_LIMIT_ERROR_CODES = [429, 502, 503, 504, 520]
RETRY_ERROR_CODES = RATE_LIMIT_ERROR_CODES + [404, 408, 500]
# Error codes that mean the key is spent or invalid: retrying will never help.
PERMANENT_QUOTA_CODES = ("budget_exceeded", "insufficient_quota")
PERMANENT_AUTH_CODES = ("invalid_api_key", "invalid_api_token", "authentication_error")
MAX_NUM_TRIES = 3


def _error_tokens(body: bytes) -> set:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return {error.lower()}
    if isinstance(error, dict):
        return {str(error[k]).lower() for k in ("code", "type") if error.get(k) is not None}
    return set()


def _is_permanent(status: int, body: bytes) -> bool:
    if status == 429:
        return not _error_tokens(body).isdisjoint(PERMANENT_QUOTA_CODES)
    if status in (401, 403):
        if not _error_tokens(body).isdisjoint(PERMANENT_AUTH_CODES):
            return True
        text = body.decode("utf-8", errors="replace").lower()
        return "invalid api key" in text or "incorrect api key" in text
    return False


class PermanentEndpointError(Exception):
    """The endpoint's key is spent or unauthorized; this client no longer sends requests."""

    def __init__(self, status: int, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response_content = body


class NeMoGymAsyncOpenAI(BaseModel):
    """A thin aiohttp client for an OpenAI-compatible endpoint; methods return parsed JSON dicts."""

    base_url: str
    api_key: str
    internal: bool = Field(
        default=False, description="Internal NeMo Gym servers: retry rate limits indefinitely."
    )
    max_connection_retries: int | None = None
    max_http_attempts: int = Field(default=MAX_NUM_TRIES, ge=1)
    default_headers: dict[str, str] = Field(default_factory=dict)
    retry_sleep_seconds: float = 0.5

    _tripped_state: tuple | None = PrivateAttr(default=None)

    def _check_tripped(self) -> None:
        tripped = self._tripped_state
        if tripped is not None:
            status, body, url = tripped
            raise PermanentEndpointError(
                status,
                f"Skipping further requests to {self.base_url}: HTTP {status} is permanent (url={url})",
                body,
            )

    async def _send(self, method: str, url: str, json: Any = None) -> Any:
        from nemo_gym.server_utils import raise_for_status, request

        self._check_tripped()
        headers = {**self.default_headers, "Authorization": f"Bearer {self.api_key}"}
        limit = self.max_http_attempts
        attempt = 0
        connection_failures = 0
        while True:
            self._check_tripped()
            attempt += 1
            try:
                response = await request(method, url, json=json, headers=headers)
            except (TimeoutError, aiohttp.ClientConnectionError):
                connection_failures += 1
                if (
                    self.max_connection_retries is not None
                    and connection_failures > self.max_connection_retries
                ):
                    raise
                attempt -= 1
                await asyncio.sleep(self.retry_sleep_seconds)
                continue
            status = response.status
            if status < 400:
                return orjson.loads(await response.read())
            body = await response.read()
            if _is_permanent(status, body):
                self._tripped_state = (status, body, url)
                self._check_tripped()
            if status not in RETRY_ERROR_CODES:
                await raise_for_status(response, body)
            if self.internal and status in RATE_LIMIT_ERROR_CODES:
                limit += 1
            if attempt >= limit:
                await raise_for_status(response, body)
            print(
                f"[model_retry url={url} status={status} try={attempt} max_tries={limit} "
                f"error_msg={body.decode('utf-8', errors='replace')[:200]}]",
                flush=True,
            )
            await asyncio.sleep(self.retry_sleep_seconds)

    async def create_models(self) -> Any:
        return await self._send("GET", f"{self.base_url}/models")

    async def create_chat_completion(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/chat/completions", kwargs)

    async def create_completion(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/completions", kwargs)

    async def create_response(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url}/responses", kwargs)

    async def create_tokenize(self, **kwargs: Any) -> Any:
        return await self._send("POST", f"{self.base_url.removesuffix('/v1')}/tokenize", kwargs)
