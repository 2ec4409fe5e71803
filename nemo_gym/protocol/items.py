"""Responses API items: content parts, messages, tool calls and results, and their training variants.

The SDK ships request items as `TypedDict`s (no validation) and output items as pydantic models
with lazy `Iterable` fields; these are strict, list-based equivalents. `NeMoGymResponseInputItem`
and `NeMoGymResponseOutputItem` are read off one table, `ITEM_KINDS`.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypeAlias

from openai.types import responses as sdk
from openai.types.responses import response_input_item as sdk_input
from openai.types.responses import response_output_item as sdk_output
from openai.types.responses import response_reasoning_item as sdk_reasoning
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from typing_extensions import TypedDict

from nemo_gym.protocol.tagging import (
    GENERIC,
    TRAINING_SUFFIX,
    by_type,
    input_item_tag,
    item_union,
    output_item_tag,
    output_part_type,
    part_type,
    require_type,
    tagged_union,
)
from nemo_gym.protocol.tokens import TokenIDLogProbMixin, check_token_metadata_complete

ItemStatus: TypeAlias = Literal["in_progress", "completed", "incomplete"]


class NeMoGymSummary(sdk_reasoning.Summary):
    pass


class NeMoGymResponseReasoningItem(BaseModel):
    id: str
    summary: list[NeMoGymSummary]
    type: Literal["reasoning"] = "reasoning"
    encrypted_content: str | None = None
    content: list[sdk_reasoning.Content] | None = None
    # No `status`: OpenAI rejects it when a reasoning item is replayed as input.


class NeMoGymResponseOutputText(BaseModel):
    annotations: list[dict[str, Any]]
    text: str
    type: Literal["output_text"] = "output_text"
    logprobs: list[dict[str, Any]] | None = None


class NeMoGymResponseOutputRefusal(BaseModel):
    refusal: str
    type: Literal["refusal"] = "refusal"


NeMoGymContent = tagged_union(
    by_type(NeMoGymResponseOutputText, NeMoGymResponseOutputRefusal), output_part_type
)


class NeMoGymResponseOutputMessage(BaseModel):
    id: str
    content: list[NeMoGymContent]
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "completed"
    type: Literal["message"] = "message"
    phase: Literal["commentary", "final_answer"] | None = None


class NeMoGymInputVideoPart(TypedDict, total=False):
    type: Required[Literal["input_video"]]
    video_url: str | dict[str, Any]
    video: str | dict[str, Any]


class NeMoGymResponseInputText(TypedDict, total=False):
    text: Required[str]
    type: Required[Literal["input_text"]]


class NeMoGymResponseInputImage(TypedDict, total=False):
    type: Required[Literal["input_image"]]
    detail: Literal["low", "high", "auto", "original"]
    file_id: str | None
    image_url: str | None


class NeMoGymResponseInputFile(TypedDict, total=False):
    type: Required[Literal["input_file"]]
    file_data: str
    file_id: str | None
    file_url: str
    filename: str


class NeMoGymResponseInputAudio(TypedDict, total=False):
    type: Required[Literal["input_audio"]]
    input_audio: Required[dict[str, Any]]


def _check_video_part(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "input_video":
        sources = [key for key in ("video_url", "video") if key in value]
        if len(sources) != 1:
            raise ValueError("an input_video part takes video_url or video, and only one of them")
        source = value[sources[0]]
        url = source.get("url") if isinstance(source, dict) else source
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"input_video.{sources[0]} must contain a non-empty URL")
    return value


NeMoGymResponseInputContentPart = tagged_union(
    by_type(
        NeMoGymResponseInputText,
        NeMoGymResponseInputImage,
        NeMoGymResponseInputFile,
        NeMoGymResponseInputAudio,
        NeMoGymInputVideoPart,
    ),
    part_type,
    BeforeValidator(_check_video_part),
)
NeMoGymResponseInputContentList: TypeAlias = list[NeMoGymResponseInputContentPart]


class NeMoGymEasyInputMessage(BaseModel):
    content: str | NeMoGymResponseInputContentList
    role: Literal["user", "assistant", "system", "developer"]
    type: Literal["message"] = "message"
    phase: Literal["commentary", "final_answer"] | None = None


class NeMoGymMessage(BaseModel):
    content: NeMoGymResponseInputContentList
    role: Literal["user", "system", "developer"]
    status: ItemStatus = "completed"
    type: Literal["message"] = "message"


class NeMoGymFunctionCallOutput(BaseModel):
    """A function result as a request input item (the SDK only has a TypedDict for it)."""

    call_id: str
    output: str | list[dict[str, Any]]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: ItemStatus | None = None


class NeMoGymResponseFunctionToolCall(BaseModel):
    arguments: str
    call_id: str
    name: str
    type: Literal["function_call"] = "function_call"
    id: str | None = None
    status: ItemStatus | None = None
    namespace: str | None = None


class NeMoGymResponseFunctionCallOutput(sdk.ResponseFunctionToolCallOutputItem):
    """A function result as returned by a provider in ``response.output``."""


# Hosted / client-executed tool items: the SDK models, with fields that some
# OpenAI-compatible providers omit made optional.


class NeMoGymResponseMcpCall(sdk_output.McpCall):
    type: Literal["mcp_call"] = "mcp_call"
    id: str | None = None
    server_label: str | None = None
    status: str | None = None


class NeMoGymResponseMcpListTools(sdk_output.McpListTools):
    type: Literal["mcp_list_tools"] = "mcp_list_tools"
    tools: list[Any] = Field(default_factory=list)
    id: str | None = None
    server_label: str | None = None


class NeMoGymResponseMcpApprovalRequest(sdk_output.McpApprovalRequest):
    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    id: str | None = None
    server_label: str | None = None


class NeMoGymResponseFileSearchToolCall(sdk.ResponseFileSearchToolCall):
    pass


class NeMoGymResponseFunctionWebSearch(sdk.ResponseFunctionWebSearch):
    pass


class NeMoGymResponseComputerToolCall(sdk.ResponseComputerToolCall):
    pass


class NeMoGymImageGenerationCall(sdk_output.ImageGenerationCall):
    pass


class NeMoGymResponseCodeInterpreterToolCall(sdk.ResponseCodeInterpreterToolCall):
    pass


class NeMoGymLocalShellCall(sdk_output.LocalShellCall):
    pass


class NeMoGymResponseCustomToolCall(sdk.ResponseCustomToolCall):
    pass


class NeMoGymComputerCallOutput(sdk_input.ComputerCallOutput):
    pass


class NeMoGymResponseComputerCallOutput(sdk.ResponseComputerToolCallOutputItem):
    pass


class NeMoGymResponseCustomToolCallOutput(sdk_input.ResponseCustomToolCallOutput):
    pass


class NeMoGymResponseCustomToolCallOutputItem(sdk.ResponseCustomToolCallOutputItem):
    pass


class NeMoGymLocalShellCallOutput(sdk_input.LocalShellCallOutput):
    pass


class NeMoGymResponseLocalShellCallOutput(sdk_output.LocalShellCallOutput):
    pass


class NeMoGymMcpApprovalResponse(sdk_input.McpApprovalResponse):
    pass


class NeMoGymResponseMcpApprovalResponse(sdk_output.McpApprovalResponse):
    pass


class _GenericItem(BaseModel):
    """Fallback for item types this SDK version has no model for: kept verbatim."""

    model_config = ConfigDict(extra="allow")
    type: str | None = None


# Training variants: the item plus the policy's token ids and log-probs.


class NeMoGymEasyInputMessageForTraining(NeMoGymEasyInputMessage, TokenIDLogProbMixin):
    pass


class NeMoGymMessageForTraining(NeMoGymMessage, TokenIDLogProbMixin):
    pass


class NeMoGymResponseOutputMessageForTraining(NeMoGymResponseOutputMessage, TokenIDLogProbMixin):
    pass


class NeMoGymResponseFunctionToolCallForTraining(NeMoGymResponseFunctionToolCall, TokenIDLogProbMixin):
    pass


class NeMoGymResponseReasoningItemForTraining(NeMoGymResponseReasoningItem, TokenIDLogProbMixin):
    pass


RESPONSES_TO_TRAIN = {
    NeMoGymEasyInputMessage: NeMoGymEasyInputMessageForTraining,
    NeMoGymMessage: NeMoGymMessageForTraining,
    NeMoGymResponseOutputMessage: NeMoGymResponseOutputMessageForTraining,
    NeMoGymResponseFunctionToolCall: NeMoGymResponseFunctionToolCallForTraining,
    NeMoGymResponseReasoningItem: NeMoGymResponseReasoningItemForTraining,
}


def training_variant_of(item_cls: type) -> type:
    """The ``...ForTraining`` class for an item class (NotImplementedError if it has none)."""
    variant = RESPONSES_TO_TRAIN.get(item_cls)
    if variant is None:
        raise NotImplementedError(
            f"{item_cls.__name__} has no ForTraining variant; register one in RESPONSES_TO_TRAIN "
            "before attaching token ids to it"
        )
    return variant


# ---- the item unions -------------------------------------------------------------------


# Each union's members, each written once. Items that a dict names by its `type` are tagged with
# it (their model's `type` literal); the three message models all say "message" and are told
# apart by their fields (`tagging.message_tag`).
_MESSAGES: dict[str, type] = {
    "easy_message": NeMoGymEasyInputMessage,
    "input_message": NeMoGymMessage,
    "output_message": NeMoGymResponseOutputMessage,
}
# The same model in a request's input and in a response's output.
_CALLS = (
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseReasoningItem,
    NeMoGymResponseMcpCall,
    NeMoGymResponseMcpListTools,
    NeMoGymResponseMcpApprovalRequest,
    NeMoGymResponseFileSearchToolCall,
    NeMoGymResponseFunctionWebSearch,
    NeMoGymResponseComputerToolCall,
    NeMoGymImageGenerationCall,
    NeMoGymResponseCodeInterpreterToolCall,
    NeMoGymLocalShellCall,
    NeMoGymResponseCustomToolCall,
)
# Tool results: a request sends them as input items, a provider returns them as output items.
_INPUT_RESULTS = (
    NeMoGymFunctionCallOutput,
    NeMoGymComputerCallOutput,
    NeMoGymResponseCustomToolCallOutput,
    NeMoGymLocalShellCallOutput,
    NeMoGymMcpApprovalResponse,
)
_OUTPUT_RESULTS = (
    NeMoGymResponseFunctionCallOutput,
    NeMoGymResponseComputerCallOutput,
    NeMoGymResponseCustomToolCallOutputItem,
    NeMoGymResponseLocalShellCallOutput,
    NeMoGymResponseMcpApprovalResponse,
)


def _members(results: tuple[type[BaseModel], ...], **extra: type) -> dict[str, type]:
    """Messages, calls, `results`, `extra`, the generic fallback, then the training variant of
    every trainable member (`RESPONSES_TO_TRAIN`), tagged `<its tag>__training`."""
    members: dict[str, type] = {
        **_MESSAGES,
        **by_type(*_CALLS, *results),
        **extra,
        GENERIC: _GenericItem,
    }
    training = {
        tag + TRAINING_SUFFIX: RESPONSES_TO_TRAIN[cls]
        for tag, cls in members.items()
        if cls in RESPONSES_TO_TRAIN
    }
    return {**members, **training}


NeMoGymResponseInputItem = item_union(
    _members(_INPUT_RESULTS),
    input_item_tag,
    "_input_item_tag",
    BeforeValidator(check_token_metadata_complete),
)
NeMoGymResponseInput: TypeAlias = list[NeMoGymResponseInputItem]

NeMoGymResponseOutputItem = item_union(
    # Agents return whole trajectories, which also hold bare tool results (no id, no status).
    _members(_OUTPUT_RESULTS, function_call_output_input=NeMoGymFunctionCallOutput),
    output_item_tag,
    "_output_item_tag",
    BeforeValidator(check_token_metadata_complete),
    BeforeValidator(require_type),
)
