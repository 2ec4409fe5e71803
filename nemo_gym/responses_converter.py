"""NeMo Gym's `ResponsesConverter` (alias `VLLMConverter`): Responses ⇄ Chat Completions as
typed objects, for agents that talk to a chat endpoint themselves or rebuild Responses items
from a harness's chat transcript.

The conversion is the adapter's own (`nemo_gym.conversion`): the same messages, the same
`<think>` handling, the same token-id fields, so an agent converting on its side produces what
our vLLM adapter would send. These methods wrap it in NeMo Gym's typed signatures.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import uuid4

from pydantic import BaseModel, TypeAdapter

from nemo_gym.conversion.chat_to_responses import OutputIds, chat_to_response
from nemo_gym.conversion.responses_to_chat import ConversionOptions, responses_to_chat
from nemo_gym.conversion.think import split_think, wrap_think
from nemo_gym.openai_utils import (
    NeMoGymChatCompletion,
    NeMoGymChatCompletionCreateParamsNonStreaming,
    NeMoGymChoice,
    NeMoGymEasyInputMessage,
    NeMoGymFunctionCallOutput,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputItem,
)

TOKEN_ID_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
_OUTPUT_ITEMS: TypeAdapter[list[NeMoGymResponseOutputItem]] = TypeAdapter(list[NeMoGymResponseOutputItem])
# Chat params with a Responses equivalent of the same name.
_SAME_NAME = (
    "metadata",
    "model",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "store",
    "temperature",
    "top_logprobs",
    "top_p",
    "user",
    "stream",
)


def _token_information(message: dict[str, Any]) -> dict[str, Any] | None:
    """The token-id fields of a chat message, when it carries all of them."""
    if all(message.get(key) is not None for key in TOKEN_ID_FIELDS):
        return {key: message[key] for key in TOKEN_ID_FIELDS}
    return None


def _add_refusal(output: list[dict[str, Any]], refusal: str) -> None:
    """Put a refusal part on the assistant message (created after any reasoning if there is none)."""
    message = next((item for item in output if item["type"] == "message"), None)
    if message is None:
        message = {
            "id": f"msg_{uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [],
        }
        output.insert(sum(item["type"] == "reasoning" for item in output), message)
    texts = [part for part in message["content"] if part.get("text")]
    message["content"] = [*texts, {"type": "refusal", "refusal": refusal}]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    return dict(value)


class ResponsesConverter(BaseModel):
    """`return_token_id_information`: keep token ids/log-probs on items and messages.
    `uses_reasoning_parser`: reasoning travels as `<think>` blocks split into reasoning items."""

    return_token_id_information: bool
    uses_reasoning_parser: bool = True

    THINK_OPEN: ClassVar[str] = "<think>"

    @staticmethod
    def _wrap_reasoning_in_think_tags(texts: list[str]) -> str:
        return "".join(wrap_think(text) for text in texts if text)

    @classmethod
    def _parse_think_tags(cls, content: str) -> tuple[list[str], str]:
        """(the texts of the complete `<think>` blocks, the content without them)."""
        return split_think(content)

    def _options(self, model: str) -> ConversionOptions:
        return ConversionOptions(
            model=model,
            uses_reasoning_parser=self.uses_reasoning_parser,
            return_token_id_information=self.return_token_id_information,
            # NeMo Gym's converter puts history reasoning under `reasoning_content` only (its chat
            # message types have no `reasoning`); the adapter chooses the upstream key itself.
            reasoning_field="reasoning_content",
        )

    # ---- Responses → Chat ---------------------------------------------------------------
    def responses_to_chat_completion_create_params(
        self, responses_create_params: NeMoGymResponseCreateParamsNonStreaming | dict[str, Any]
    ) -> NeMoGymChatCompletionCreateParamsNonStreaming:
        params = _as_dict(responses_create_params)
        body = responses_to_chat(params, self._options(params.get("model") or ""))
        if not params.get("model"):
            body.pop("model", None)
        if "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        return NeMoGymChatCompletionCreateParamsNonStreaming.model_validate(body)

    # ---- Chat → Responses ---------------------------------------------------------------
    def postprocess_assistant_message_dict(self, message_dict: dict[str, Any]) -> list[Any]:
        """One assistant chat message as Responses output items (reasoning, message, calls)."""
        message = dict(message_dict)
        if not self.uses_reasoning_parser:
            message.pop("reasoning_content", None)
            message.pop("reasoning", None)
        token_info = _token_information(message) if self.return_token_id_information else None
        refusal = message.get("refusal")
        chat = {"choices": [{"message": message, "finish_reason": "stop"}]}
        # The item ids are drawn here, with this module's uuid4, as NeMo Gym draws them (its
        # environments' tests patch `nemo_gym.responses_converter.uuid4` for fixed ids).
        ids = OutputIds(response="", reasoning=f"rs_{uuid4().hex}", message=f"msg_{uuid4().hex}")
        output = chat_to_response(
            chat,
            {},
            model="",
            uses_reasoning_parser=self.uses_reasoning_parser,
            token_info=token_info,
            ids=ids,
        )["output"]
        if refusal:
            _add_refusal(output, str(refusal))
        return _OUTPUT_ITEMS.validate_python(output)

    def postprocess_chat_response(self, choice: NeMoGymChoice) -> list[Any]:
        return self.postprocess_assistant_message_dict(choice.message.model_dump(exclude_none=True))

    def _extract_reasoning_from_content(self, content: str) -> tuple[list[str], str]:
        return self._parse_think_tags(content)

    def chat_completions_messages_to_responses_items(self, messages: list[dict[str, Any]]) -> list[Any]:
        """A chat transcript as Responses items (user/system/developer messages, assistant turns,
        tool results)."""
        items: list[Any] = []
        for message in messages:
            role = message.get("role")
            if role in ("user", "system", "developer"):
                items.append(
                    NeMoGymEasyInputMessage.model_validate(
                        {**message, "content": message.get("content") or ""}
                    )
                )
            elif role == "assistant":
                items.extend(self.postprocess_assistant_message_dict(message))
            elif role == "tool":
                content = message.get("content")
                if isinstance(content, list):
                    content = [{"type": "input_text", "text": part["text"]} for part in content]
                items.append(
                    NeMoGymFunctionCallOutput(
                        call_id=message["tool_call_id"], output=content, status="completed"
                    )
                )
            else:
                raise ValueError(
                    f"a chat message has the role {role!r}; expected user, system, developer, assistant or tool"
                )
        return items

    def chat_completion_to_responses_create_params(
        self, chat_completion_create_params: NeMoGymChatCompletionCreateParamsNonStreaming
    ) -> NeMoGymResponseCreateParamsNonStreaming:
        chat = chat_completion_create_params
        params: dict[str, Any] = {
            "input": self.chat_completions_messages_to_responses_items(list(chat.messages))
        }
        for key in _SAME_NAME:
            value = getattr(chat, key, None)
            if value is not None:
                params[key] = value
        max_tokens = getattr(chat, "max_completion_tokens", None) or getattr(chat, "max_tokens", None)
        if max_tokens is not None:
            params["max_output_tokens"] = max_tokens
        effort = getattr(chat, "reasoning_effort", None)
        if effort is not None:
            params["reasoning"] = {"effort": effort}
        tools = getattr(chat, "tools", None) or []
        params["tools"] = [
            {
                "type": "function",
                "name": tool["function"]["name"],
                "description": tool["function"].get("description"),
                "parameters": tool["function"].get("parameters"),
                "strict": tool["function"].get("strict", False),
            }
            for tool in (_as_dict(t) for t in tools)
            if tool.get("type") == "function"
        ]
        tool_choice = getattr(chat, "tool_choice", None)
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            params["tool_choice"] = {"type": "function", "name": tool_choice["function"]["name"]}
        else:
            params["tool_choice"] = tool_choice if tool_choice is not None else "auto"
        return NeMoGymResponseCreateParamsNonStreaming.model_validate(params)

    def chat_completion_to_response(
        self,
        responses_create_params: NeMoGymResponseCreateParamsNonStreaming,
        chat_completion: NeMoGymChatCompletion | dict[str, Any],
        *,
        preserve_envelope_id: bool = False,
    ) -> NeMoGymResponse:
        """The Responses object a model server would answer for this chat completion."""
        chat = _as_dict(chat_completion)
        request = _as_dict(responses_create_params)
        message = chat["choices"][0]["message"]
        token_info = _token_information(message) if self.return_token_id_information else None
        response = chat_to_response(
            chat,
            request,
            model=request.get("model") or chat.get("model") or "",
            uses_reasoning_parser=self.uses_reasoning_parser,
            token_info=token_info,
        )
        if preserve_envelope_id and chat.get("id"):
            response["id"] = str(chat["id"])
        if chat["choices"][0].get("finish_reason") == "content_filter":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "content_filter"}
        return NeMoGymResponse.model_validate(response)


# Item types that begin what the model generated (an assistant message counts too); input
# before the first of them is the replayed prompt.
_GENERATED_ITEM_TYPES = frozenset(
    {
        "code_interpreter_call",
        "computer_call",
        "custom_tool_call",
        "file_search_call",
        "function_call",
        "image_generation_call",
        "local_shell_call",
        "mcp_approval_request",
        "mcp_call",
        "mcp_list_tools",
        "reasoning",
        "web_search_call",
        "apply_patch_call",
        "shell_call",
        "tool_search_call",
    }
)


def _item_field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def split_responses_input_output_items(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """(the prompt items, the items from the model's first generated one on)."""
    for index, item in enumerate(items):
        item_type = _item_field(item, "type")
        if item_type in _GENERATED_ITEM_TYPES or (
            item_type == "message" and _item_field(item, "role") == "assistant"
        ):
            return items[:index], items[index:]
    return list(items), []


VLLMConverter = ResponsesConverter


__all__ = ["ResponsesConverter", "VLLMConverter", "split_responses_input_output_items"]
