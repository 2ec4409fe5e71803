"""Server-side validated models for the OpenAI Responses and Chat Completions wire formats.

Environments written for NeMo Gym import these names (``NeMoGymResponse``,
``NeMoGymResponseCreateParamsNonStreaming``, ...). The ``openai`` SDK ships request shapes
as ``TypedDict``s (no validation) and response shapes as pydantic models that use lazy
``Iterable`` fields; the models below are strict, list-based equivalents.

Item unions are discriminated by a cheap callable (no trial-and-error validation of every
member), and a request item carrying token metadata (``prompt_token_ids`` /
``generation_token_ids`` / ``generation_log_probs``) selects its ``...ForTraining`` variant.
"""

from __future__ import annotations

from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    TypeAlias,
    Union,
    get_args,
)

from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
)
from openai.types.chat.chat_completion import Choice
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
from openai.types.responses.response_output_item import (
    LocalShellCallOutput as _OutputLocalShellCallOutput,
)
from openai.types.responses.response_output_item import (
    McpApprovalResponse as _OutputMcpApprovalResponse,
)
from openai.types.responses.response_reasoning_item import Content as _ReasoningContent
from openai.types.responses.response_reasoning_item import Summary
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails, ResponseUsage
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from typing_extensions import TypedDict

# ---------------------------------------------------------------------------------------
# Token metadata carried by items that a policy sampled (used for RL training)
# ---------------------------------------------------------------------------------------

# Routed MoE expert ids per token, or an opaque string envelope that Gym never inspects.
RoutedExperts: TypeAlias = str | list[list[list[int]]]

REQUIRED_TOKEN_METADATA_FIELDS = frozenset(
    {"prompt_token_ids", "generation_token_ids", "generation_log_probs"}
)
TOKEN_METADATA_FIELDS = REQUIRED_TOKEN_METADATA_FIELDS | {"routed_experts"}


class TokenIDLogProbMixin(BaseModel):
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    routed_experts: RoutedExperts | None = None


class TokenIDLogProbTypedDictMixin(TypedDict):
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    routed_experts: NotRequired[RoutedExperts]


def _check_token_metadata_complete(value: Any) -> Any:
    """An item that has any token field must have all three required ones."""
    if isinstance(value, dict) and not TOKEN_METADATA_FIELDS.isdisjoint(value):
        missing = REQUIRED_TOKEN_METADATA_FIELDS - value.keys()
        if missing:
            raise ValueError(
                f"Token metadata must include all required fields; missing: {', '.join(sorted(missing))}"
            )
    return value


# ---------------------------------------------------------------------------------------
# Responses API items
# ---------------------------------------------------------------------------------------

ItemStatus: TypeAlias = Literal["in_progress", "completed", "incomplete"]


class NeMoGymSummary(Summary):
    pass


class NeMoGymResponseReasoningItem(BaseModel):
    id: str
    summary: list[NeMoGymSummary]
    type: Literal["reasoning"] = "reasoning"
    encrypted_content: str | None = None
    content: list[_ReasoningContent] | None = None
    # No `status`: OpenAI rejects it when a reasoning item is replayed as input.


class NeMoGymResponseOutputText(BaseModel):
    annotations: list[dict[str, Any]]
    text: str
    type: Literal["output_text"] = "output_text"
    logprobs: list[dict[str, Any]] | None = None


class NeMoGymResponseOutputRefusal(BaseModel):
    refusal: str
    type: Literal["refusal"] = "refusal"


def _content_part_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None and "refusal" in value:
            return "refusal"
        return kind
    return getattr(value, "type", None)


NeMoGymContent: TypeAlias = Annotated[
    Annotated[NeMoGymResponseOutputText, Tag("output_text")]
    | Annotated[NeMoGymResponseOutputRefusal, Tag("refusal")],
    Discriminator(_content_part_tag),
]


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


def _input_part_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type")
    return getattr(value, "type", None)


NeMoGymResponseInputContentPart: TypeAlias = Annotated[
    Annotated[NeMoGymResponseInputText, Tag("input_text")]
    | Annotated[NeMoGymResponseInputImage, Tag("input_image")]
    | Annotated[NeMoGymResponseInputFile, Tag("input_file")]
    | Annotated[NeMoGymResponseInputAudio, Tag("input_audio")]
    | Annotated[NeMoGymInputVideoPart, Tag("input_video")],
    Discriminator(_input_part_tag),
    BeforeValidator(_check_video_part),
]
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


class NeMoGymResponseFunctionCallOutput(ResponseFunctionToolCallOutputItem):
    """A function result as returned by a provider in ``response.output``."""


# Hosted / client-executed tool items: the SDK models, with fields that some
# OpenAI-compatible providers omit made optional.


class NeMoGymResponseMcpCall(McpCall):
    type: Literal["mcp_call"] = "mcp_call"
    id: str | None = None
    server_label: str | None = None
    status: str | None = None


class NeMoGymResponseMcpListTools(McpListTools):
    type: Literal["mcp_list_tools"] = "mcp_list_tools"
    tools: list[Any] = Field(default_factory=list)
    id: str | None = None
    server_label: str | None = None


class NeMoGymResponseMcpApprovalRequest(McpApprovalRequest):
    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    id: str | None = None
    server_label: str | None = None


class NeMoGymResponseFileSearchToolCall(ResponseFileSearchToolCall):
    pass


class NeMoGymResponseFunctionWebSearch(ResponseFunctionWebSearch):
    pass


class NeMoGymResponseComputerToolCall(ResponseComputerToolCall):
    pass


class NeMoGymImageGenerationCall(ImageGenerationCall):
    pass


class NeMoGymResponseCodeInterpreterToolCall(ResponseCodeInterpreterToolCall):
    pass


class NeMoGymLocalShellCall(LocalShellCall):
    pass


class NeMoGymResponseCustomToolCall(ResponseCustomToolCall):
    pass


class NeMoGymComputerCallOutput(ComputerCallOutput):
    pass


class NeMoGymResponseComputerCallOutput(ResponseComputerToolCallOutputItem):
    pass


class NeMoGymResponseCustomToolCallOutput(ResponseCustomToolCallOutput):
    pass


class NeMoGymResponseCustomToolCallOutputItem(ResponseCustomToolCallOutputItem):
    pass


class NeMoGymLocalShellCallOutput(LocalShellCallOutput):
    pass


class NeMoGymResponseLocalShellCallOutput(_OutputLocalShellCallOutput):
    pass


class NeMoGymMcpApprovalResponse(McpApprovalResponse):
    pass


class NeMoGymResponseMcpApprovalResponse(_OutputMcpApprovalResponse):
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


# ---------------------------------------------------------------------------------------
# Item union discrimination
# ---------------------------------------------------------------------------------------

_PLAIN_ROLES = frozenset({"user", "system", "developer"})
_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
_OUTPUT_PART_TYPES = frozenset({"output_text", "refusal"})
_TRAINABLE_TAGS = frozenset({"easy_message", "input_message", "output_message", "function_call", "reasoning"})


def _first_part_type(content: Any) -> str | None:
    if isinstance(content, list) and content:
        return _content_part_tag(content[0])
    return None


def _message_tag(value: dict[str, Any]) -> str:
    content = value.get("content")
    role = value.get("role")
    if role in _PLAIN_ROLES:
        return (
            "input_message"
            if isinstance(content, list) and value.get("status") in _STATUSES
            else "easy_message"
        )
    if isinstance(content, list):
        if content and _first_part_type(content) in _OUTPUT_PART_TYPES:
            return "output_message"
        if not content and isinstance(value.get("id"), str):
            return "output_message"
    return "easy_message"


def _untyped_tag(value: dict[str, Any]) -> str:
    """Infer the kind of an item that has no ``type`` (the API allows it for messages)."""
    content = value.get("content")
    if "role" in value and isinstance(content, (str, list)):
        return _message_tag(value)
    if isinstance(value.get("id"), str) and isinstance(content, list):
        return "output_message"
    if "arguments" in value and "name" in value:
        return "function_call" if "call_id" in value else "mcp_call"
    if "call_id" in value and "output" in value:
        return "function_call_output"
    if isinstance(value.get("id"), str) and isinstance(value.get("summary"), list):
        return "reasoning"
    return "generic"


def _with_training(tag: str, value: dict[str, Any]) -> str:
    if tag in _TRAINABLE_TAGS and REQUIRED_TOKEN_METADATA_FIELDS <= value.keys():
        return tag + "__training"
    return tag


def _tag_of_instance(value: Any, tags: dict[type, str]) -> str:
    for cls in type(value).__mro__:
        tag = tags.get(cls)
        if tag is not None:
            return tag
    return "generic"


_INPUT_TAGS: dict[type, str] = {}
_OUTPUT_TAGS: dict[type, str] = {}
_INPUT_KNOWN: set = set()
_OUTPUT_KNOWN: set = set()


def _input_item_tag(value: Any) -> str:
    if not isinstance(value, dict):
        return _tag_of_instance(value, _INPUT_TAGS)
    kind = value.get("type")
    if kind == "message":
        tag = _message_tag(value)
    elif kind is None:
        tag = _untyped_tag(value)
    else:
        tag = kind if kind in _INPUT_KNOWN else "generic"
    return _with_training(tag, value)


def _output_item_tag(value: Any) -> str:
    if not isinstance(value, dict):
        return _tag_of_instance(value, _OUTPUT_TAGS)
    kind = value.get("type")
    if kind == "message":
        tag = _message_tag(value)
    elif kind == "function_call_output":
        # The SDK output model requires id + status; bare results are request items.
        if isinstance(value.get("id"), str) and value.get("status") in _STATUSES:
            tag = "function_call_output"
        else:
            tag = "function_call_output_input"
    else:
        tag = kind if kind in _OUTPUT_KNOWN else "generic"
    return _with_training(tag, value)


def _require_type(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value:
        raise ValueError("an output item needs a 'type' field to say what kind of item it is")
    return value


def _register(union: Any, tags: dict[type, str], known: set) -> None:
    for member in get_args(get_args(union)[0]):
        cls, tag = get_args(member)[0], next(m for m in get_args(member)[1:] if isinstance(m, Tag)).tag
        tags.setdefault(cls, tag)
        known.add(tag)
    tags[_GenericItem] = "generic"


_TRAINING_MEMBERS = (
    Annotated[NeMoGymEasyInputMessageForTraining, Tag("easy_message__training")],
    Annotated[NeMoGymMessageForTraining, Tag("input_message__training")],
    Annotated[NeMoGymResponseOutputMessageForTraining, Tag("output_message__training")],
    Annotated[NeMoGymResponseFunctionToolCallForTraining, Tag("function_call__training")],
    Annotated[NeMoGymResponseReasoningItemForTraining, Tag("reasoning__training")],
)

NeMoGymResponseInputItem: TypeAlias = Annotated[
    Union[
        Annotated[NeMoGymEasyInputMessage, Tag("easy_message")],
        Annotated[NeMoGymMessage, Tag("input_message")],
        Annotated[NeMoGymResponseOutputMessage, Tag("output_message")],
        Annotated[NeMoGymResponseFunctionToolCall, Tag("function_call")],
        Annotated[NeMoGymFunctionCallOutput, Tag("function_call_output")],
        Annotated[NeMoGymResponseReasoningItem, Tag("reasoning")],
        Annotated[NeMoGymResponseMcpCall, Tag("mcp_call")],
        Annotated[NeMoGymResponseMcpListTools, Tag("mcp_list_tools")],
        Annotated[NeMoGymResponseMcpApprovalRequest, Tag("mcp_approval_request")],
        Annotated[NeMoGymResponseFileSearchToolCall, Tag("file_search_call")],
        Annotated[NeMoGymResponseFunctionWebSearch, Tag("web_search_call")],
        Annotated[NeMoGymResponseComputerToolCall, Tag("computer_call")],
        Annotated[NeMoGymImageGenerationCall, Tag("image_generation_call")],
        Annotated[NeMoGymResponseCodeInterpreterToolCall, Tag("code_interpreter_call")],
        Annotated[NeMoGymLocalShellCall, Tag("local_shell_call")],
        Annotated[NeMoGymResponseCustomToolCall, Tag("custom_tool_call")],
        Annotated[NeMoGymComputerCallOutput, Tag("computer_call_output")],
        Annotated[NeMoGymResponseCustomToolCallOutput, Tag("custom_tool_call_output")],
        Annotated[NeMoGymLocalShellCallOutput, Tag("local_shell_call_output")],
        Annotated[NeMoGymMcpApprovalResponse, Tag("mcp_approval_response")],
        Annotated[_GenericItem, Tag("generic")],
        *_TRAINING_MEMBERS,
    ],
    Discriminator(_input_item_tag),
    BeforeValidator(_check_token_metadata_complete),
]
_register(NeMoGymResponseInputItem, _INPUT_TAGS, _INPUT_KNOWN)
NeMoGymResponseInput: TypeAlias = list[NeMoGymResponseInputItem]

NeMoGymResponseOutputItem: TypeAlias = Annotated[
    Union[
        Annotated[NeMoGymResponseOutputMessage, Tag("output_message")],
        Annotated[NeMoGymResponseFunctionToolCall, Tag("function_call")],
        Annotated[NeMoGymResponseFunctionCallOutput, Tag("function_call_output")],
        Annotated[NeMoGymResponseReasoningItem, Tag("reasoning")],
        Annotated[NeMoGymResponseMcpCall, Tag("mcp_call")],
        Annotated[NeMoGymResponseMcpListTools, Tag("mcp_list_tools")],
        Annotated[NeMoGymResponseMcpApprovalRequest, Tag("mcp_approval_request")],
        Annotated[NeMoGymResponseFileSearchToolCall, Tag("file_search_call")],
        Annotated[NeMoGymResponseFunctionWebSearch, Tag("web_search_call")],
        Annotated[NeMoGymResponseComputerToolCall, Tag("computer_call")],
        Annotated[NeMoGymImageGenerationCall, Tag("image_generation_call")],
        Annotated[NeMoGymResponseCodeInterpreterToolCall, Tag("code_interpreter_call")],
        Annotated[NeMoGymLocalShellCall, Tag("local_shell_call")],
        Annotated[NeMoGymResponseCustomToolCall, Tag("custom_tool_call")],
        Annotated[NeMoGymResponseComputerCallOutput, Tag("computer_call_output")],
        Annotated[NeMoGymResponseCustomToolCallOutputItem, Tag("custom_tool_call_output")],
        Annotated[NeMoGymResponseLocalShellCallOutput, Tag("local_shell_call_output")],
        Annotated[NeMoGymResponseMcpApprovalResponse, Tag("mcp_approval_response")],
        # Agents return whole trajectories, which also hold the prompt and tool results.
        Annotated[NeMoGymEasyInputMessage, Tag("easy_message")],
        Annotated[NeMoGymMessage, Tag("input_message")],
        Annotated[NeMoGymFunctionCallOutput, Tag("function_call_output_input")],
        Annotated[_GenericItem, Tag("generic")],
        *_TRAINING_MEMBERS,
    ],
    Discriminator(_output_item_tag),
    BeforeValidator(_check_token_metadata_complete),
    BeforeValidator(_require_type),
]
_register(NeMoGymResponseOutputItem, _OUTPUT_TAGS, _OUTPUT_KNOWN)


# ---------------------------------------------------------------------------------------
# Responses API request
# ---------------------------------------------------------------------------------------


def _replayable(item: Any) -> Any:
    """Output items fed back as input: provider quirks that a request would reject."""
    if (
        isinstance(item, dict)
        and item.get("type") == "computer_call_output"
        and item.get("status") == "failed"
    ):
        item = dict(item)
        del item["status"]
    return item


class NeMoGymResponseCreateParamsNonStreaming(BaseModel):
    """A strict ``POST /v1/responses`` body (the SDK's TypedDict, validated)."""

    model_config = ConfigDict(extra="forbid")

    background: bool | None = None
    include: list[ResponseIncludable] | None = None
    input: str | NeMoGymResponseInput
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt: ResponsePromptParam | None = None
    reasoning: Reasoning | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    store: bool | None = None
    context_management: list[dict[str, Any]] | None = None
    conversation: str | dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    text: ResponseTextConfigParam | None = None
    tool_choice: ToolChoice = "auto"
    tools: list[ToolParam] = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    stream: Literal[False] | None = None

    @model_validator(mode="before")
    @classmethod
    def _replay_output_items(cls, data: Any) -> Any:
        items = data.get("input") if isinstance(data, dict) else None
        if isinstance(items, list) and any(
            isinstance(i, dict) and i.get("type") == "computer_call_output" for i in items
        ):
            data = {**data, "input": [_replayable(i) for i in items]}
        return data


# ---------------------------------------------------------------------------------------
# Responses API response
# ---------------------------------------------------------------------------------------


class NeMoGymResponseInputTokensDetails(InputTokensDetails):
    cached_tokens: int | None
    # Newer SDKs require this; NeMo Gym code builds details from `cached_tokens` alone.
    cache_write_tokens: int | None = None


class NeMoGymResponseOutputTokensDetails(OutputTokensDetails):
    reasoning_tokens: int | None


def _add_counts(left: int | None, right: int | None) -> int | None:
    """Unknown plus anything stays unknown."""
    return None if left is None or right is None else left + right


class NeMoGymResponseUsage(ResponseUsage):
    input_tokens_details: NeMoGymResponseInputTokensDetails
    output_tokens_details: NeMoGymResponseOutputTokensDetails

    @classmethod
    def sum_from_list(cls, usages: Any) -> NeMoGymResponseUsage:
        total = cls(
            input_tokens=0,
            input_tokens_details=NeMoGymResponseInputTokensDetails(cached_tokens=0),
            output_tokens=0,
            output_tokens_details=NeMoGymResponseOutputTokensDetails(reasoning_tokens=0),
            total_tokens=0,
        )
        for usage in usages:
            total = accumulate_response_usage(total, usage)
        return total


def accumulate_response_usage(
    total: NeMoGymResponseUsage | None, additional: NeMoGymResponseUsage | None
) -> NeMoGymResponseUsage | None:
    """``total + additional`` (either may be None); the inputs are not mutated."""
    if additional is None:
        return total
    if total is None:
        return additional.model_copy(deep=True)
    result = total.model_copy(deep=True)
    result.input_tokens += additional.input_tokens
    result.output_tokens += additional.output_tokens
    result.total_tokens += additional.total_tokens
    if result.input_tokens_details is not None and additional.input_tokens_details is not None:
        result.input_tokens_details.cached_tokens = _add_counts(
            result.input_tokens_details.cached_tokens, additional.input_tokens_details.cached_tokens
        )
    if result.output_tokens_details is not None and additional.output_tokens_details is not None:
        result.output_tokens_details.reasoning_tokens = _add_counts(
            result.output_tokens_details.reasoning_tokens, additional.output_tokens_details.reasoning_tokens
        )
    return result


# openai's response models name a few fields by alias only (`async_` is sent as `async`), and
# keep unknown keys as extras. `NeMoGymResponse(**other.model_dump())`, which environments
# write, dumps by field name, so without this rename the re-validated copy would carry both
# the field and a stray extra and no longer equal the original.
_ALIASED_NAMES = {"async_": "async", "schema_": "schema"}


def _to_aliases(item: Any) -> Any:
    if isinstance(item, dict) and any(name in item for name in _ALIASED_NAMES):
        item = dict(item)
        for name, alias in _ALIASED_NAMES.items():
            if name in item and alias not in item:
                item[alias] = item.pop(name)
    return item


class NeMoGymResponse(Response):
    output: list[NeMoGymResponseOutputItem]
    usage: NeMoGymResponseUsage | None = None

    @model_validator(mode="before")
    @classmethod
    def _field_names_as_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        tools, text = data.get("tools"), data.get("text")
        if tools:
            data = {**data, "tools": [_to_aliases(tool) for tool in tools]}
        if isinstance(text, dict) and isinstance(text.get("format"), dict):
            data = {**data, "text": {**text, "format": _to_aliases(text["format"])}}
        return data


# ---------------------------------------------------------------------------------------
# Chat Completions API response
# ---------------------------------------------------------------------------------------


class NeMoGymFunction(BaseModel):
    arguments: str
    name: str


class NeMoGymChatCompletionMessageToolCall(ChatCompletionMessageToolCall):
    function: NeMoGymFunction


class NeMoGymChatCompletionMessage(ChatCompletionMessage):
    tool_calls: list[NeMoGymChatCompletionMessageToolCall] | None = None


class NeMoGymChatCompletionMessageForTraining(NeMoGymChatCompletionMessage, TokenIDLogProbMixin):
    pass


def _chat_message_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "training" if REQUIRED_TOKEN_METADATA_FIELDS <= value.keys() else "plain"
    return "training" if isinstance(value, TokenIDLogProbMixin) else "plain"


NeMoGymChatCompletionOutputMessage: TypeAlias = Annotated[
    Annotated[NeMoGymChatCompletionMessage, Tag("plain")]
    | Annotated[NeMoGymChatCompletionMessageForTraining, Tag("training")],
    Discriminator(_chat_message_tag),
    BeforeValidator(_check_token_metadata_complete),
]


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


NeMoGymChatCompletionContentPartParam: TypeAlias = Annotated[
    Annotated[NeMoGymChatCompletionContentPartTextParam, Tag("text")]
    | Annotated[NeMoGymChatCompletionContentPartImageParam, Tag("image_url")]
    | Annotated[NeMoGymChatCompletionContentPartInputAudioParam, Tag("input_audio")]
    | Annotated[NeMoGymChatCompletionContentPartFileParam, Tag("file")]
    | Annotated[NeMoGymChatCompletionContentPartVideoUrlParam, Tag("video_url")],
    Discriminator(_input_part_tag),
]


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


def _chat_request_message_tag(value: Any) -> str | None:
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    if role == "assistant" and isinstance(value, dict) and REQUIRED_TOKEN_METADATA_FIELDS <= value.keys():
        return "assistant__training"
    return role


NeMoGymChatCompletionMessageParam: TypeAlias = Annotated[
    Annotated[NeMoGymChatCompletionDeveloperMessageParam, Tag("developer")]
    | Annotated[NeMoGymChatCompletionSystemMessageParam, Tag("system")]
    | Annotated[NeMoGymChatCompletionUserMessageParam, Tag("user")]
    | Annotated[NeMoGymChatCompletionAssistantMessageParam, Tag("assistant")]
    | Annotated[NeMoGymChatCompletionAssistantMessageForTrainingParam, Tag("assistant__training")]
    | Annotated[NeMoGymChatCompletionToolMessageParam, Tag("tool")],
    Discriminator(_chat_request_message_tag),
    BeforeValidator(_check_token_metadata_complete),
]


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


# ---------------------------------------------------------------------------------------
# Client: lives in nemo_gym.http.openai_client; NeMo Gym's names, re-exported.
# ---------------------------------------------------------------------------------------

from nemo_gym.http.openai_client import (  # noqa: E402, F401
    MAX_NUM_TRIES,
    PERMANENT_AUTH_CODES,
    PERMANENT_QUOTA_CODES,
    RATE_LIMIT_ERROR_CODES,
    RETRY_ERROR_CODES,
    NeMoGymAsyncOpenAI,
    PermanentEndpointError,
)
