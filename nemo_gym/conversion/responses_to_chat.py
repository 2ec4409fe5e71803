"""Responses API create-params → a Chat Completions request body for vLLM.

Assistant-side items (reasoning, assistant messages, function calls) that follow each
other become ONE assistant message, exactly as the model produced them in one turn;
anything else would change the prompt tokens the model is trained on.

The request is checked here, field by field as it converts, and not by validating it through
`nemo_gym.protocol`'s `NeMoGymResponseCreateParamsNonStreaming` first, for two reasons:
- Cost. That validation costs several times this whole conversion, and the adapter's CPU per
  request is what its throughput is made of (`make bench` measures it).
- A different contract. The adapter accepts more than the strict model does: vLLM's sampling
  extras (`top_k`, `min_p`, …), a function tool without `strict`, `stream: true`. It rejects what
  it cannot convert (hosted tools, items other than messages, reasoning and function calls and
  their results) with one error naming the offending `param`, where the model would list a
  failure per union member.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from nemo_gym.conversion.errors import ConversionError
from nemo_gym.conversion.think import split_think, wrap_think
from nemo_gym.protocol.tokens import TOKEN_FIELDS

# Responses fields copied to the chat body under the same name when the caller set them.
_PASSTHROUGH = ("temperature", "top_p", "parallel_tool_calls", "user", "metadata", "seed")
# vLLM sampling extras a Responses caller may add; forwarded as is.
_VLLM_EXTRAS = (
    "required_prefix_token_ids",  # vLLM: generation must start with these ids (passed through)
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "stop_token_ids",
    "logit_bias",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "min_tokens",
    "chat_template_kwargs",
)
_REJECTED = {
    "previous_response_id": "previous_response_id is not supported: this server is stateless; send the full history in 'input'",
    "conversation": "conversation is not supported: this server is stateless; send the full history in 'input'",
    "prompt": "stored prompts ('prompt') are not supported; send 'input' and 'instructions'",
}


@dataclass(frozen=True)
class ConversionOptions:
    """What the adapter config changes about the conversion."""

    model: str
    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    return_token_id_information: bool = False
    # the key(s) history reasoning goes upstream under: "both", "reasoning" or "reasoning_content"
    reasoning_field: str = "both"


def _text_part(part: dict[str, Any], param: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise ConversionError(f"'{param}.text' must be a string", param=f"{param}.text")
    return text


def _content_parts(content: Any, param: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(param path, part, part type) for each part of a non-string content, validated as objects."""
    if not isinstance(content, list):
        raise ConversionError(f"'{param}' must be a string or a list of content parts", param=param)
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise ConversionError(f"'{p}' must be an object", param=p)
        yield p, part, part.get("type")


def _user_content(content: Any, param: str) -> Any:
    """Content of a user/system/developer message: strings stay strings, parts convert."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for p, part, kind in _content_parts(content, param):
        if kind in ("input_text", "text", "output_text"):
            parts.append({"type": "text", "text": _text_part(part, p)})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise ConversionError(
                    f"'{p}.image_url' must be a URL or data URL string (file_id images are not supported)",
                    param=f"{p}.image_url",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": part.get("image_url")})
        else:
            raise ConversionError(f"unsupported content part type {kind!r} at '{p}'", param=f"{p}.type")
    return parts


def _assistant_text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    out = []
    for p, part, kind in _content_parts(content, param):
        if kind in ("output_text", "input_text", "text"):
            out.append(_text_part(part, p))
        elif kind == "refusal":
            out.append(str(part.get("refusal", "")))
        else:
            raise ConversionError(
                f"unsupported assistant content part type {kind!r} at '{p}'", param=f"{p}.type"
            )
    return "".join(out)


def _reasoning_texts(item: dict[str, Any], param: str) -> list[str]:
    summary = item.get("summary") or []
    if not isinstance(summary, list):
        raise ConversionError(f"'{param}.summary' must be a list", param=f"{param}.summary")
    texts = []
    for j, part in enumerate(summary):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise ConversionError(
                f"'{param}.summary[{j}]' must be a summary_text object with a 'text'",
                param=f"{param}.summary[{j}]",
            )
        texts.append(part["text"])
    if not texts:
        # Reasoning items may carry their text in `content` (reasoning_text parts) instead.
        for part in item.get("content") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


class _AssistantTurn:
    """Accumulates consecutive assistant-side items into one chat message."""

    __slots__ = ("parts", "tool_calls", "has_text", "tokens")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.has_text = False
        self.tokens: dict[str, Any] | None = None

    def to_message(self) -> dict[str, Any]:
        content = "".join(self.parts) if (self.has_text or not self.tool_calls) else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tokens:
            message.update(self.tokens)
        return message


def _convert_input(items: list[Any], opts: ConversionOptions) -> list[dict[str, Any]]:
    """Consecutive assistant-side items (text, reasoning, function calls) fold into one message."""
    messages: list[dict[str, Any]] = []
    turn: _AssistantTurn | None = None
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConversionError(f"'input[{i}]' must be an object", param=f"input[{i}]")
        param = f"input[{i}]"
        kind = item.get("type")
        if kind is None and item.get("role") is not None:
            kind = "message"
        if kind == "function_call_output" or (kind == "message" and item.get("role") != "assistant"):
            if turn is not None:
                messages.append(turn.to_message())
                turn = None
            messages.append(
                _tool_output(item, param)
                if kind == "function_call_output"
                else _plain_message(item, param, opts)
            )
            continue
        turn = _add_to_turn(turn or _AssistantTurn(), kind, item, param)
        if opts.return_token_id_information and "generation_token_ids" in item:
            turn.tokens = {key: item[key] for key in TOKEN_FIELDS if key in item}
    if turn is not None:
        messages.append(turn.to_message())
    return messages


def _plain_message(item: dict[str, Any], param: str, opts: ConversionOptions) -> dict[str, Any]:
    """A user, system or developer message (an assistant message joins the assistant turn)."""
    role = item.get("role")
    if role not in ("user", "system", "developer"):
        raise ConversionError(f"unsupported message role {role!r} at '{param}.role'", param=f"{param}.role")
    if role == "developer" and opts.replace_developer_role_with_system:
        role = "system"
    return {"role": role, "content": _user_content(item.get("content"), f"{param}.content")}


def _tool_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise ConversionError(f"'{param}.call_id' must be a string", param=f"{param}.call_id")
    output = item.get("output")
    if not isinstance(output, str):
        output = _user_content(output, f"{param}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _add_to_turn(turn: _AssistantTurn, kind: Any, item: dict[str, Any], param: str) -> _AssistantTurn:
    if kind == "message":
        turn.parts.append(_assistant_text(item.get("content"), f"{param}.content"))
        turn.has_text = True
    elif kind == "reasoning":
        turn.parts.extend(wrap_think(text) for text in _reasoning_texts(item, param))
        turn.has_text = True
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise ConversionError(f"'{param}.{key}' must be a string", param=f"{param}.{key}")
        turn.tool_calls.append(
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
        )
    else:
        raise ConversionError(
            f"unsupported input item type {kind!r} at '{param}.type'", param=f"{param}.type"
        )
    return turn


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise ConversionError("'tools' must be a list", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise ConversionError(
                f"unsupported tool type {kind!r} at 'tools[{i}]': only function tools are supported",
                param=f"tools[{i}].type",
            )
        if not isinstance(tool.get("name"), str):
            raise ConversionError(f"'tools[{i}].name' must be a string", param=f"tools[{i}].name")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None
        }
        out.append({"type": "function", "function": function})
    return out


def _convert_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise ConversionError(f"unsupported tool_choice {choice!r}", param="tool_choice")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ConversionError(
        "unsupported tool_choice: use 'auto', 'none', 'required' or {'type': 'function', 'name': ...}",
        param="tool_choice",
    )


def _convert_text_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise ConversionError("'text' must be an object", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise ConversionError(f"unsupported text.format type {kind!r}", param="text.format.type")


_REASONING_KEYS = ("reasoning", "reasoning_content")


def with_reasoning(message: dict[str, Any], reasoning: str, field: str) -> dict[str, Any]:
    """`reasoning` under the key(s) `field` names, and under no other. vLLM >= 0.16 reads
    `reasoning` on both its chat and /tokenize endpoints; only its chat endpoint also reads
    `reasoning_content` (renaming it), so sending that alone renders differently on /tokenize."""
    out = {k: v for k, v in message.items() if k not in _REASONING_KEYS}
    if field in ("both", "reasoning"):
        out["reasoning"] = reasoning
    if field in ("both", "reasoning_content"):
        out["reasoning_content"] = reasoning
    return out


def move_think_to_reasoning_content(message: dict[str, Any], field: str = "both") -> dict[str, Any]:
    """For a reasoning-parser upstream: `<think>R</think>T` → content T, reasoning R under the
    `reasoning_field` key(s). A message that already has a reasoning key keeps its value, moved
    to those keys (a chat caller may echo vLLM's `reasoning` or send `reasoning_content`)."""
    content = message.get("content")
    given = message.get("reasoning")
    if given is None:
        given = message.get("reasoning_content")
    blocks, rest = split_think(content) if isinstance(content, str) else ([], content)
    if not blocks:
        if isinstance(given, str):
            return with_reasoning(message, given, field)
        return message
    reasoning = "".join(blocks)
    if isinstance(given, str):
        reasoning = given + reasoning
    return with_reasoning({**message, "content": rest}, reasoning, field)


def responses_to_chat(params: dict[str, Any], opts: ConversionOptions) -> dict[str, Any]:
    """The chat body to send upstream (without adapter-level extras like token flags)."""
    _check_request(params)
    body: dict[str, Any] = {"model": opts.model, "messages": _chat_messages(params, opts)}
    if params.get("tools"):
        body["tools"] = _convert_tools(params["tools"])
    if params.get("tool_choice") is not None:
        body["tool_choice"] = _convert_tool_choice(params["tool_choice"])
    if params.get("text") is not None:
        response_format = _convert_text_format(params["text"])
        if response_format is not None:
            body["response_format"] = response_format
    if params.get("max_output_tokens") is not None:
        body["max_tokens"] = params["max_output_tokens"]
    for key in _PASSTHROUGH:
        if params.get(key) is not None:
            body[key] = params[key]
    for key in _VLLM_EXTRAS:
        if key in params:
            body[key] = params[key]
    return body


def _check_request(params: Any) -> None:
    if not isinstance(params, dict):
        raise ConversionError("request body must be a JSON object")
    for key, message in _REJECTED.items():
        if params.get(key) is not None:
            raise ConversionError(message, param=key)
    # A streamed answer is the server's choice; null (NeMo Gym's dumped rows carry it) means no.
    if params.get("stream") is not None and not isinstance(params["stream"], bool):
        raise ConversionError("'stream' must be true or false", param="stream")


def _chat_messages(params: dict[str, Any], opts: ConversionOptions) -> list[dict[str, Any]]:
    """Instructions as the system message, then the input; think blocks moved for a reasoning parser."""
    messages: list[dict[str, Any]] = []
    instructions = params.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ConversionError("'instructions' must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})

    raw_input = params.get("input")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    elif isinstance(raw_input, list):
        messages.extend(_convert_input(raw_input, opts))
    else:
        raise ConversionError("'input' is required and must be a string or a list of items", param="input")

    if opts.uses_reasoning_parser:
        field = opts.reasoning_field
        messages = [
            move_think_to_reasoning_content(m, field) if m["role"] == "assistant" else m for m in messages
        ]
    return messages


def chat_messages_for_upstream(
    messages: list[ChatCompletionMessageParam], opts: ConversionOptions
) -> list[dict[str, Any]]:
    """Chat endpoint input: developer→system and think→reasoning (`reasoning_field`), as for Responses."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversionError(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role == "developer" and opts.replace_developer_role_with_system:
            message = {**message, "role": "system"}
        elif role == "assistant" and opts.uses_reasoning_parser:
            message = move_think_to_reasoning_content(message, opts.reasoning_field)
        out.append(message)
    return out
