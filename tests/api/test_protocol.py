"""nemo_gym.protocol: the wire models' packages, their unions' tables, and the openai_utils facade."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from nemo_gym import openai_utils
from nemo_gym.protocol import chat, items, responses, tagging, tokens

# Every name NeMo Gym 0.7.0's own environments, agents and tests import from nemo_gym.openai_utils
# that we export (read off its source tree with `ast`). CHAT_REQUEST_PROVIDER_EXTENSION_FIELDS,
# NeMoGymChatCompletionToolUnionParam, NeMoGymFunctionToolParam and _validate_atomic_token_metadata
# are imported only by 0.7.0's own adapter and its tests, which ours replaces.
NEMO_GYM_IMPORTS = (
    "MAX_NUM_TRIES",
    "NeMoGymAsyncOpenAI",
    "NeMoGymChatCompletion",
    "NeMoGymChatCompletionAssistantMessageForTrainingParam",
    "NeMoGymChatCompletionAssistantMessageParam",
    "NeMoGymChatCompletionCreateParamsNonStreaming",
    "NeMoGymChatCompletionMessage",
    "NeMoGymChatCompletionMessageParam",
    "NeMoGymChatCompletionMessageToolCall",
    "NeMoGymChatCompletionMessageToolCallFunctionParam",
    "NeMoGymChatCompletionMessageToolCallParam",
    "NeMoGymChatCompletionSystemMessageParam",
    "NeMoGymChatCompletionToolMessageParam",
    "NeMoGymChatCompletionToolParam",
    "NeMoGymChatCompletionUserMessageParam",
    "NeMoGymChoice",
    "NeMoGymEasyInputMessage",
    "NeMoGymFunction",
    "NeMoGymFunctionCallOutput",
    "NeMoGymFunctionDefinition",
    "NeMoGymMessage",
    "NeMoGymResponse",
    "NeMoGymResponseCreateParamsNonStreaming",
    "NeMoGymResponseFunctionToolCall",
    "NeMoGymResponseInput",
    "NeMoGymResponseInputItem",
    "NeMoGymResponseInputText",
    "NeMoGymResponseOutputItem",
    "NeMoGymResponseOutputMessage",
    "NeMoGymResponseOutputText",
    "NeMoGymResponseReasoningItem",
    "NeMoGymResponseUsage",
    "NeMoGymSummary",
    "REQUIRED_TOKEN_METADATA_FIELDS",
    "RESPONSES_TO_TRAIN",
    "RATE_LIMIT_ERROR_CODES",
    "RETRY_ERROR_CODES",
    "Reasoning",
    "TOKEN_METADATA_FIELDS",
    "TokenIDLogProbMixin",
    "accumulate_response_usage",
    "training_variant_of",
)


def _tags(union: object) -> list[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return [next(m for m in typing.get_args(member)[1:] if hasattr(m, "tag")).tag for member in members]


def test_facade_exports_what_nemo_gym_code_imports():
    missing = [name for name in NEMO_GYM_IMPORTS if not hasattr(openai_utils, name)]
    assert missing == []
    assert sorted(openai_utils.__all__) == sorted(set(openai_utils.__all__))
    assert [name for name in openai_utils.__all__ if not hasattr(openai_utils, name)] == []


def test_facade_names_are_the_protocol_objects():
    assert openai_utils.NeMoGymResponse is responses.NeMoGymResponse
    assert openai_utils.NeMoGymResponseInputItem is items.NeMoGymResponseInputItem
    assert (
        openai_utils.NeMoGymChatCompletionCreateParamsNonStreaming
        is chat.NeMoGymChatCompletionCreateParamsNonStreaming
    )
    assert openai_utils.TokenIDLogProbMixin is tokens.TokenIDLogProbMixin
    assert openai_utils.accumulate_response_usage is responses.accumulate_response_usage


def test_facade_defines_no_wire_model_itself():
    """openai_utils only re-exports: the wire models live in nemo_gym/protocol/, the client in nemo_gym/http/."""
    tree = ast.parse(Path(openai_utils.__file__).read_text())
    defined = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert defined == []
    assert openai_utils.NeMoGymAsyncOpenAI.__module__ == "nemo_gym.http.openai_client"


def test_input_union_members_come_from_one_table():
    assert _tags(items.NeMoGymResponseInputItem) == [
        "easy_message",
        "input_message",
        "output_message",
        "function_call",
        "reasoning",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "file_search_call",
        "web_search_call",
        "computer_call",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "custom_tool_call",
        "function_call_output",
        "computer_call_output",
        "custom_tool_call_output",
        "local_shell_call_output",
        "mcp_approval_response",
        "generic",
        "easy_message__training",
        "input_message__training",
        "output_message__training",
        "function_call__training",
        "reasoning__training",
    ]


def test_output_union_differs_only_in_results_and_bare_tool_results():
    input_tags = _tags(items.NeMoGymResponseInputItem)
    output_tags = _tags(items.NeMoGymResponseOutputItem)
    assert [tag for tag in output_tags if tag not in input_tags] == ["function_call_output_input"]
    assert [tag for tag in input_tags if tag not in output_tags] == []
    output_members = dict(
        zip(output_tags, typing.get_args(typing.get_args(items.NeMoGymResponseOutputItem)[0]), strict=True)
    )
    assert (
        typing.get_args(output_members["function_call_output"])[0] is items.NeMoGymResponseFunctionCallOutput
    )
    assert typing.get_args(output_members["function_call_output_input"])[0] is items.NeMoGymFunctionCallOutput
    assert (
        typing.get_args(output_members["computer_call_output"])[0] is items.NeMoGymResponseComputerCallOutput
    )


def test_by_type_reads_models_and_typed_dicts():
    assert tagging.by_type(items.NeMoGymResponseMcpCall, items.NeMoGymResponseInputText) == {
        "mcp_call": items.NeMoGymResponseMcpCall,
        "input_text": items.NeMoGymResponseInputText,
    }


def test_an_environment_subclass_routes_as_its_base():
    class MyCall(openai_utils.NeMoGymResponseFunctionToolCall):
        pass

    call = MyCall(call_id="c", name="f", arguments="{}")
    validated = TypeAdapter(openai_utils.NeMoGymResponseInputItem).validate_python(call)
    assert type(validated) is MyCall
    assert validated.call_id == "c"


def test_discriminator_names_in_errors_are_unchanged():
    """Callers see these messages in 422 bodies; moving the tagging must not rename them."""
    with pytest.raises(ValidationError) as caught:
        openai_utils.NeMoGymResponseCreateParamsNonStreaming.model_validate(
            {"input": [{"type": "message", "role": "user", "content": [{"text": "x"}]}]}
        )
    messages = [error["msg"] for error in caught.value.errors()]
    assert "Unable to extract tag using discriminator _input_part_tag()" in messages
    with pytest.raises(ValidationError) as caught:
        openai_utils.NeMoGymChatCompletionCreateParamsNonStreaming.model_validate(
            {"messages": [{"content": "x"}]}
        )
    assert [error["msg"] for error in caught.value.errors()] == [
        "Unable to extract tag using discriminator _chat_request_message_tag()"
    ]


def test_token_fields_pick_the_training_variant_on_both_unions():
    body = {
        "type": "function_call",
        "call_id": "c",
        "name": "f",
        "arguments": "{}",
        "prompt_token_ids": [1, 2],
        "generation_token_ids": [3],
        "generation_log_probs": [-0.5],
    }
    for union in (items.NeMoGymResponseInputItem, items.NeMoGymResponseOutputItem):
        item = TypeAdapter(union).validate_python(body)
        assert type(item) is items.NeMoGymResponseFunctionToolCallForTraining
        assert item.generation_token_ids == [3]
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(items.NeMoGymResponseInputItem).validate_python(
            {**body, "generation_log_probs": None} | {}
        )
    assert caught.value.errors()[0]["loc"] == ("function_call__training", "generation_log_probs")


@pytest.mark.parametrize(
    "item",
    [
        {"type": "message", "role": ["user"], "content": "x"},
        {"type": ["message"], "role": "user", "content": "x"},
        {"type": "message", "role": "assistant", "content": [{"type": ["output_text"], "text": "x"}]},
        {"type": "function_call_output", "id": "x", "status": {}, "call_id": "c", "output": "o"},
    ],
)
def test_a_malformed_tag_field_is_a_validation_error_not_a_type_error(item: dict) -> None:
    from pydantic import ValidationError

    from nemo_gym.openai_utils import NeMoGymResponseCreateParamsNonStreaming

    with pytest.raises(ValidationError):
        NeMoGymResponseCreateParamsNonStreaming.model_validate({"input": [item]})


def test_a_status_that_is_not_a_string_makes_a_message_an_easy_one() -> None:
    from nemo_gym.openai_utils import NeMoGymResponseCreateParamsNonStreaming

    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "x"}],
        "status": ["done"],
    }
    params = NeMoGymResponseCreateParamsNonStreaming.model_validate({"input": [item]})
    assert type(params.input[0]).__name__ == "NeMoGymEasyInputMessage"


def test_usage_dumps_as_nemo_gyms_without_unknown_newer_counts() -> None:
    """NeMo Gym's pinned SDK has only `cached_tokens` in the input details; newer SDKs' counts
    are dumped only when known, so a usage built from NeMo Gym's fields dumps as its does."""
    from nemo_gym.openai_utils import NeMoGymResponseUsage

    def usage(**input_details: int) -> NeMoGymResponseUsage:
        return NeMoGymResponseUsage(
            input_tokens=1,
            input_tokens_details=input_details,
            output_tokens=2,
            output_tokens_details={"reasoning_tokens": 0},
            total_tokens=3,
        )

    assert usage(cached_tokens=0).model_dump()["input_tokens_details"] == {"cached_tokens": 0}
    assert usage(cached_tokens=0).model_dump_json().count("cache_write") == 0
    assert usage(cached_tokens=0, cache_write_tokens=4).model_dump()["input_tokens_details"] == {
        "cache_write_tokens": 4,
        "cached_tokens": 0,
    }
