"""The Responses API request (`POST /v1/responses`), its usage counts and its response object."""

from __future__ import annotations

from typing import Any, Literal

from openai.types.responses import Response
from openai.types.responses import response_create_params as sdk_params
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails, ResponseUsage
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from nemo_gym.protocol.items import NeMoGymResponseInput, NeMoGymResponseOutputItem


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
    include: list[sdk_params.ResponseIncludable] | None = None
    input: str | NeMoGymResponseInput
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt: sdk_params.ResponsePromptParam | None = None
    reasoning: sdk_params.Reasoning | None = None
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
    text: sdk_params.ResponseTextConfigParam | None = None
    tool_choice: sdk_params.ToolChoice = "auto"
    tools: list[sdk_params.ToolParam] = Field(default_factory=list)
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


# Counts that newer SDKs added to the input details; unknown (None), they are left out of the
# dump, which then reads as NeMo Gym's (its pinned SDK has only `cached_tokens`).
_NEWER_INPUT_DETAILS = ("cache_write_tokens", "cache_write_tokens_details")


class NeMoGymResponseInputTokensDetails(InputTokensDetails):
    cached_tokens: int | None
    # Newer SDKs require this; NeMo Gym code builds details from `cached_tokens` alone.
    cache_write_tokens: int | None = None

    @model_serializer(mode="wrap")
    def _drop_unknown_newer_counts(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in _NEWER_INPUT_DETAILS:
                if key in data and data[key] is None:
                    del data[key]
        return data


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
