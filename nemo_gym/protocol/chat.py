"""The Chat Completions API request (`POST /v1/chat/completions`) and its response object."""

from __future__ import annotations

from typing import Any, Literal, Required

from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
)
from openai.types.chat.chat_completion import Choice
from pydantic import BaseModel, BeforeValidator, ConfigDict
from typing_extensions import TypedDict

from nemo_gym.protocol.tagging import (
    TRAINING_SUFFIX,
    by_type,
    chat_message_tag,
    chat_request_message_tag,
    part_type,
    tagged_union,
)
from nemo_gym.protocol.tokens import (
    TokenIDLogProbMixin,
    TokenIDLogProbTypedDictMixin,
    check_token_metadata_complete,
)


class NeMoGymFunction(BaseModel):
    arguments: str
    name: str


class NeMoGymChatCompletionMessageToolCall(ChatCompletionMessageToolCall):
    function: NeMoGymFunction


class NeMoGymChatCompletionMessage(ChatCompletionMessage):
    tool_calls: list[NeMoGymChatCompletionMessageToolCall] | None = None


class NeMoGymChatCompletionMessageForTraining(NeMoGymChatCompletionMessage, TokenIDLogProbMixin):
    pass


NeMoGymChatCompletionOutputMessage = tagged_union(
    {"plain": NeMoGymChatCompletionMessage, "training": NeMoGymChatCompletionMessageForTraining},
    chat_message_tag,
    BeforeValidator(check_token_metadata_complete),
)


class NeMoGymChoice(Choice):
    message: NeMoGymChatCompletionOutputMessage


class NeMoGymChatCompletion(ChatCompletion):
    choices: list[NeMoGymChoice]


# ---------------------------------------------------------------------------------------
# Chat Completions API request
# ---------------------------------------------------------------------------------------


class NeMoGymChatCompletionContentPartTextParam(TypedDict, total=False):
    text: Required[str]
    type: Required[Literal["text"]]


class NeMoGymChatCompletionContentPartImageParam(TypedDict, total=False):
    image_url: Required[dict[str, Any]]
    type: Required[Literal["image_url"]]


class NeMoGymInputAudio(TypedDict, total=False):
    data: Required[str]
    format: Required[str]


class NeMoGymChatCompletionContentPartInputAudioParam(TypedDict, total=False):
    type: Required[Literal["input_audio"]]
    input_audio: Required[NeMoGymInputAudio]


class NeMoGymChatCompletionContentPartFileParam(TypedDict, total=False):
    file: Required[dict[str, Any]]
    type: Required[Literal["file"]]


class NeMoGymChatCompletionContentPartVideoUrlParam(TypedDict, total=False):
    video_url: Required[str | dict[str, Any]]
    type: Required[Literal["video_url"]]


NeMoGymChatCompletionContentPartParam = tagged_union(
    by_type(
        NeMoGymChatCompletionContentPartTextParam,
        NeMoGymChatCompletionContentPartImageParam,
        NeMoGymChatCompletionContentPartInputAudioParam,
        NeMoGymChatCompletionContentPartFileParam,
        NeMoGymChatCompletionContentPartVideoUrlParam,
    ),
    part_type,
)


class NeMoGymChatCompletionUserMessageParam(TypedDict, total=False):
    content: Required[str | list[NeMoGymChatCompletionContentPartParam]]
    role: Required[Literal["user"]]
    name: str


class NeMoGymChatCompletionSystemMessageParam(TypedDict, total=False):
    content: Required[str | list[NeMoGymChatCompletionContentPartTextParam]]
    role: Required[Literal["system"]]
    name: str


class NeMoGymChatCompletionDeveloperMessageParam(TypedDict, total=False):
    content: Required[str | list[NeMoGymChatCompletionContentPartTextParam]]
    role: Required[Literal["developer"]]
    name: str


class NeMoGymChatCompletionMessageToolCallFunctionParam(TypedDict, total=False):
    arguments: Required[str]
    name: Required[str]


class NeMoGymChatCompletionMessageToolCallParam(TypedDict, total=False):
    id: Required[str]
    function: Required[NeMoGymChatCompletionMessageToolCallFunctionParam]
    type: Required[Literal["function"]]


class NeMoGymChatCompletionAssistantMessageParam(TypedDict, total=False):
    role: Required[Literal["assistant"]]
    audio: dict[str, Any] | None
    content: str | list[dict[str, Any]] | None
    function_call: dict[str, Any] | None
    name: str
    refusal: str | None
    tool_calls: list[NeMoGymChatCompletionMessageToolCallParam] | None
    reasoning_content: str | None


class NeMoGymChatCompletionAssistantMessageForTrainingParam(
    NeMoGymChatCompletionAssistantMessageParam, TokenIDLogProbTypedDictMixin, total=False
):
    pass


class NeMoGymChatCompletionToolMessageParam(TypedDict, total=False):
    content: Required[str | list[NeMoGymChatCompletionContentPartTextParam]]
    role: Required[Literal["tool"]]
    tool_call_id: Required[str]


class NeMoGymFunctionDefinition(TypedDict, total=False):
    name: Required[str]
    description: str
    parameters: dict[str, Any]
    strict: bool | None


class NeMoGymChatCompletionToolParam(TypedDict, total=False):
    function: Required[NeMoGymFunctionDefinition]
    type: Required[Literal["function"]]


NeMoGymChatCompletionMessageParam = tagged_union(
    {
        "developer": NeMoGymChatCompletionDeveloperMessageParam,
        "system": NeMoGymChatCompletionSystemMessageParam,
        "user": NeMoGymChatCompletionUserMessageParam,
        "assistant": NeMoGymChatCompletionAssistantMessageParam,
        "assistant" + TRAINING_SUFFIX: NeMoGymChatCompletionAssistantMessageForTrainingParam,
        "tool": NeMoGymChatCompletionToolMessageParam,
    },
    chat_request_message_tag,
    BeforeValidator(check_token_metadata_complete),
)


class NeMoGymChatCompletionCreateParamsNonStreaming(BaseModel):
    """A strict ``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="forbid")

    messages: list[NeMoGymChatCompletionMessageParam]
    model: str | None = None
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    metadata: dict[str, str] | None = None
    moderation: dict[str, Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    n: int | None = None
    parallel_tool_calls: bool = True
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    safety_identifier: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    stop: str | None | list[str] | None = None
    store: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    tools: list[NeMoGymChatCompletionToolParam | dict[str, Any]] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    stream: Literal[False] | None = None
    # Provider extensions sent as top-level fields by OpenAI-SDK clients (`extra_body`).
    chat_template_kwargs: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
