"""A vLLM-compatible simulator: vLLM's wire format, a deterministic scripted policy, faults.

It stands in for `vllm serve` in tests, the demo and benchmarks. Shapes, field names,
status codes and error messages follow real captures (shared/vllm_wire). The text is
scripted, token ids are derived from the text (same text → same ids), and faults can be
injected by flag or at run time through `POST /sim/faults`.

`stream: true` answers as vLLM streams (SSE chunks, one per generated token; a chunk for a
token that adds no text, such as a think tag under a reasoning parser or tool-call markup, only
with `return_token_ids`, as vLLM does; `stream_options.include_usage`; `data: [DONE]`). With a
stream, `--latency-ms` comes before the first token and `--per-token-ms` before each token, so
time to first byte can be measured; the whole answer takes as long as unstreamed. Fault modes
for streams: `truncate` drops the connection after a few chunks, `stream_error` sends vLLM's
mid-stream error event instead of the rest.

    python -m nemo_gym.testing.vllm_simulator --port 8000 [--model NAME] [--max-model-len N]
        [--reasoning-parser] [--latency-ms X] [--per-token-ms Y] [--instance-id ID]
        [--fail-rate R --fail-status S] [--count N] [--ignore-prompt-token-ids]
        [--template chatml|qwen3|mistral|r1]

Like vLLM >= 0.32 it takes `kv_transfer_params.prompt_token_ids` as the prompt (no rendering);
`--ignore-prompt-token-ids` makes it an upstream that does not. `--template` picks a model
family's chat template and output (`sim_templates.py`): each re-renders history differently
from what the model generated, as that family does under real vLLM; finished generations end
with the family's end-of-turn id. As vLLM 0.32, its chat endpoint reads a history message's
`reasoning_content` (renamed to `reasoning`) and its /tokenize reads only `reasoning`; prompts
that do not fit get vLLM's wordings (tokens, characters, or "Input length (N) exceeds ..." for
a prompt given as ids).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from nemo_gym.testing.sim_templates import (
    CALL_ARGS,
    CALL_HEAD,
    CHATML_SPECIAL,
    MARKUP,
    REASONING,
    TEMPLATES,
    THINK_TAG,
    Template,
    TemplateError,
)

_CITY = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")
SPECIAL = CHATML_SPECIAL
_CHATML = TEMPLATES["chatml"]()
# vLLM's characters-per-token bound: a text longer than this many characters per allowed token is
# refused before it is tokenized.
_MAX_CHARS_PER_TOKEN = 16


def tokenize_text(text: str) -> tuple[list[int], list[str]]:
    """The default (chatml) template's ids: special tokens fixed, other pieces a crc32 hash."""
    return _CHATML.tokenize(text)


def render_prompt(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> str:
    """The default (chatml) template's rendering."""
    return _CHATML.render(messages, tools, add_generation_prompt, continue_final_message)


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vLLM's chat endpoint renames a message's `reasoning_content` to `reasoning` (when that is
    unset) before rendering; its /tokenize does not, so there `reasoning_content` is not rendered."""
    out = []
    for message in messages:
        if isinstance(message, dict) and "reasoning_content" in message:
            message = dict(message)
            value = message.pop("reasoning_content")
            if message.get("reasoning") is None and value is not None:
                message["reasoning"] = value
        out.append(message)
    return out


@dataclass
class Faults:
    """Fault injection: `rate` applies to a fraction of requests, `count` to the next N."""

    mode: str | None = None  # status | drop | stall | malformed | truncate | stream_error
    status: int = 503
    rate: float = 0.0
    count: int = 0
    stall_s: float = 3600.0

    def draw(self) -> str | None:
        if self.mode is None:
            return None
        if self.count > 0:
            self.count -= 1
            return self.mode
        if self.rate and random.random() < self.rate:
            return self.mode
        return None


@dataclass
class SimConfig:
    model: str = "sim-model"
    max_model_len: int = 4096
    reasoning_parser: bool = False
    latency_ms: float = 0.0
    per_token_ms: float = 0.0
    instance_id: str = "0"
    api_key: str | None = None
    # False: behave like a vLLM that ignores kv_transfer_params.prompt_token_ids (renders messages)
    honour_prompt_token_ids: bool = True
    template: str = "chatml"  # a family's chat template (nemo_gym/testing/sim_templates.py)
    faults: Faults = field(default_factory=Faults)


def _error(status: int, message: str, etype: str, param: str | None) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": param, "code": status}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class Refused(Exception):
    """A request vLLM refuses, with its status and error body."""

    def __init__(
        self, status: int, message: str, etype: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.etype, self.param = status, message, etype, param

    def response(self) -> web.Response:
        return _error(self.status, self.message, self.etype, self.param)


@dataclass(frozen=True, slots=True)
class TokenOptions:
    """The token data a request asks for, streamed or not."""

    inline: bool  # return_token_ids: generated ids on the choice, prompt ids on the answer
    logprobs: bool
    as_ids: bool  # return_tokens_as_token_ids
    top_n: int

    @classmethod
    def of(cls, data: dict[str, Any]) -> TokenOptions:
        return cls(
            inline=bool(data.get("return_token_ids")),
            logprobs=bool(data.get("logprobs")),
            as_ids=bool(data.get("return_tokens_as_token_ids")),
            top_n=int(data.get("top_logprobs") or 0),
        )

    def logprob_entry(self, tid: int, piece: str) -> dict[str, Any]:
        return _logprob_entry(tid, piece, self.as_ids, self.top_n)


def scripted_reply(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[str, str | None, list[dict[str, Any]]]:
    """The policy: returns (content, reasoning, tool_calls).

    After a tool result: a plain answer quoting it. With a `get_weather` tool: call it for the
    city in the question. A judge prompt ([[A=B]] / [[A!=B]]): a verdict. With any other tools:
    call the first one with arguments satisfying its JSON schema. Otherwise: a plain answer.
    """
    last = messages[-1] if messages else {}
    user_texts = [m.get("content") for m in messages if m.get("role") == "user"]
    question = user_texts[-1] if user_texts else ""
    if isinstance(question, list):
        question = " ".join(p.get("text", "") for p in question if isinstance(p, dict))
    question = question or ""
    if last.get("role") == "tool":
        result = last.get("content")
        if isinstance(result, list):
            result = "".join(p.get("text", "") for p in result if isinstance(p, dict))
        return f"Here is what I found: {result}", "The tool answered; I can reply now.", []
    names = [(t.get("function") or {}).get("name") for t in tools or []]
    if tools and "get_weather" in names:
        match = _CITY.search(question)
        city = match.group(1) if match else "San Francisco"
        call = {"name": "get_weather", "arguments": orjson.dumps({"city": city}).decode()}
        return "", f"The user asks about the weather in {city}. I should call get_weather.", [call]
    if "[[A=B]]" in question and "[[A!=B]]" in question:
        verdict = "[[A=B]]" if _judge_equal(question) else "[[A!=B]]"
        return f"Comparing both answers. Verdict: {verdict}", "I compare the two answers.", []
    if tools:
        spec = tools[0].get("function") or tools[0]
        arguments = schema_example(spec.get("parameters") or {"type": "object"})
        call = {"name": spec.get("name"), "arguments": orjson.dumps(arguments).decode()}
        return "", f"I should call {spec.get('name')}.", [call]
    snippet = question.strip().replace("\n", " ")[:60]
    return f"Simulated answer to: {snippet}", None, []


_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00"}
_FORMATS |= {
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def schema_example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that satisfies a JSON schema: required properties only, enums → first value."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_example(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    combined = _combined_example(schema, root, depth)
    if combined is not _NO_EXAMPLE:
        return combined
    kind = _schema_type(schema)
    return _EXAMPLE_BY_TYPE.get(kind, _string_example)(schema, root, depth)


_NO_EXAMPLE = object()


def _combined_example(schema: dict[str, Any], root: Any, depth: int) -> Any:
    """anyOf / oneOf: the first option that is not null; allOf: its parts' objects merged."""
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return schema_example(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = schema_example(part, root, depth + 1)
            if isinstance(value, dict):
                merged |= value
        return merged
    return _NO_EXAMPLE


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return kind


def _object_example(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props = schema.get("properties") or {}
    return {
        name: schema_example(props.get(name, {}), root, depth + 1) for name in schema.get("required") or []
    }


def _array_example(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    count = max(1, int(schema.get("minItems") or 0))
    return [schema_example(schema.get("items") or {}, root, depth + 1) for _ in range(count)]


def _number_example(schema: dict[str, Any], root: Any, depth: int) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    value = 1 if low is None else low + (1 if "minimum" not in schema else 0)
    high = schema.get("maximum")
    if high is not None and value > high:
        value = high
    return int(value) if _schema_type(schema) == "integer" else float(value)


def _string_example(schema: dict[str, Any], root: Any, depth: int) -> str:
    text = _FORMATS.get(schema.get("format", ""), "example")
    return text.ljust(int(schema.get("minLength") or 0), "x")


_EXAMPLE_BY_TYPE: dict[str, Callable[[dict[str, Any], Any, int], Any]] = {
    "object": _object_example,
    "array": _array_example,
    "integer": _number_example,
    "number": _number_example,
    "boolean": lambda schema, root, depth: True,
    "null": lambda schema, root, depth: None,
}


def _judge_equal(prompt: str) -> bool:
    """Judge prompts carry both answers in <answer_a>/<answer_b> tags; equal if one contains the other."""
    a = re.search(r"<answer_a>(.*?)</answer_a>", prompt, re.DOTALL)
    b = re.search(r"<answer_b>(.*?)</answer_b>", prompt, re.DOTALL)
    if not a or not b:
        return False
    x, y = (" ".join(m.group(1).lower().split()).strip(" .") for m in (a, b))
    return bool(x and y) and (x in y or y in x)


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fingerprint = f"vllm-sim-{config.instance_id}"
        self.template: Template = TEMPLATES[config.template]()
        self.created = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/sim/faults", self.set_faults)
        app.router.add_get("/sim/stats", self.stats)
        return app

    def _headers(self) -> dict[str, str]:
        return {"x-simulator-instance": self.config.instance_id}

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200, headers=self._headers())

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.32.0"})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "instance_id": self.config.instance_id,
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
        )

    async def set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.config.faults = Faults(**{k: v for k, v in data.items() if k in Faults.__dataclass_fields__})
        return web.json_response({"ok": True})

    async def models(self, _: web.Request) -> web.Response:
        body = {
            "object": "list",
            "data": [
                {
                    "id": self.config.model,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "vllm",
                    "root": self.config.model,
                    "parent": None,
                    "max_model_len": self.config.max_model_len,
                    "permission": [],
                }
            ],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(
                400,
                "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body', 'msg': 'JSON decode error'}",
                "Bad Request",
                "body",
            )
        if not isinstance(data, dict):
            return _error(400, "1 validation error: body must be an object", "Bad Request", "body")
        return data

    async def tokenize(self, request: web.Request) -> web.Response:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        data = await self._body(request)
        if isinstance(data, web.Response):
            return data
        if "messages" in data:
            try:
                text = self.template.render(
                    data["messages"],
                    data.get("tools"),
                    data.get("add_generation_prompt", True),
                    bool(data.get("continue_final_message")),
                    data.get("chat_template_kwargs"),
                )
            except TemplateError as exc:
                return _error(400, str(exc), "BadRequestError", None)
        else:
            text = str(data.get("prompt", ""))
        ids, pieces = self.template.tokenize(text)
        body = {
            "count": len(ids),
            "max_model_len": self.config.max_model_len,
            "tokens": ids,
            "token_strs": pieces if data.get("return_token_strs") else None,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=self._headers())

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        mode = self.config.faults.draw()
        if mode in ("truncate", "stream_error"):
            data = await self._body(request)
            if isinstance(data, dict) and data.get("stream"):
                request["sim_stream_fault"] = mode  # acted on inside the stream
                return None
        if mode == "status":
            status = self.config.faults.status
            return _error(
                status,
                f"simulated fault: HTTP {status}",
                "ServiceUnavailableError" if status == 503 else "InternalServerError",
                None,
            )
        if mode == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if mode == "stall":
            await asyncio.sleep(self.config.faults.stall_s)
        if mode == "malformed":
            return web.Response(
                body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        if mode == "truncate":
            # Headers and the first bytes of the body, then the connection dies mid-response.
            response = web.StreamResponse(
                status=200, headers={"content-type": "application/json", "content-length": "1000"}
            )
            await response.prepare(request)
            await response.write(b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [')
            await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return None

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """vLLM's --api-key check: 401 {"error": "Unauthorized"}."""
        if self.config.api_key and request.headers.get("authorization") != f"Bearer {self.config.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(request)
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._fault(request)
        if faulted is not None:
            return faulted
        data = await self._body(request)
        if isinstance(data, web.Response):
            return data
        try:
            generation = self._generate(data)
        except Refused as refusal:
            return refusal.response()
        if data.get("stream"):
            return await self._stream(request, data, generation)
        cfg = self.config
        delay = cfg.latency_ms / 1000 + cfg.per_token_ms * len(generation.tokens) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        body = self._completion(data, generation)
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=self._headers())

    # ---- validate → generate → render, shared by both answers ---------------------------------
    def _generate(self, data: dict[str, Any]) -> Generation:
        """The scripted turn for a request vLLM would accept, cut at its token limit; refuses as vLLM would."""
        messages = self._messages(data)
        prompt_ids, given = self._prompt(data, messages)
        limit = self._token_limit(data, len(prompt_ids), given)
        tools = data.get("tools") if data.get("tool_choice") != "none" else None
        content, reasoning, calls = scripted_reply(messages, tools)
        template = self.template
        calls = [{"id": template.call_id(), **call} for call in calls]
        kwargs = data.get("chat_template_kwargs") or {}
        tokens = generated_tokens(template, template.generation(reasoning, content, calls, kwargs))
        if len(tokens) > limit:
            return Generation(prompt_ids, tokens[:limit], [], "length")
        return Generation(prompt_ids, tokens, calls, "tool_calls" if calls else "stop")

    def _messages(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        messages = data.get("messages")
        if not isinstance(messages, list):
            loc = "body.messages"
            kind = "missing" if messages is None else "list_type"
            raise Refused(
                400,
                f"1 validation error:\n  {{'type': '{kind}', 'loc': '{loc}', 'msg': 'Input should be a valid list'}}",
                "Bad Request",
                loc,
            )
        if data.get("model") not in (None, self.config.model):
            raise Refused(
                404,
                f"The model `{data.get('model')}` does not exist. Valid aliases: {self.config.model}.",
                "NotFoundError",
                "model",
            )
        return chat_messages(messages)

    def _prompt(self, data: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[list[int], bool]:
        """(prompt ids, whether they were given as ids rather than rendered from the messages)."""
        cfg = self.config
        supplied = (data.get("kv_transfer_params") or {}).get("prompt_token_ids")
        if cfg.honour_prompt_token_ids and isinstance(supplied, list):
            return supplied, True  # vLLM >= 0.32: the given ids are the prompt; no rendering
        try:
            text = self.template.render(
                messages, data.get("tools"), kwargs=data.get("chat_template_kwargs") or {}
            )
        except TemplateError as exc:
            raise Refused(400, str(exc)) from None
        bound = cfg.max_model_len * _MAX_CHARS_PER_TOKEN
        if len(text) > bound:
            raise Refused(
                400,
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, your prompt contains {len(text)} characters (more than {bound} characters, which is the upper bound for {cfg.max_model_len} input tokens). Please reduce the length of the input prompt. (parameter=input_text, value={len(text)})",
                param="input_text",
            )
        return self.template.tokenize(text)[0], False

    def _token_limit(self, data: dict[str, Any], n_prompt: int, given: bool) -> int:
        """How many tokens may be generated, or vLLM's refusal of the request's lengths."""
        max_len = self.config.max_model_len
        max_tokens = data.get("max_tokens", data.get("max_completion_tokens"))
        if max_tokens is not None and max_tokens > max_len:
            raise Refused(
                400,
                f"max_tokens={max_tokens} cannot be greater than max_model_len={max_len}. Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                param="max_tokens",
            )
        if (
            n_prompt > max_len and given
        ):  # vLLM checks a prompt given as ids in get_max_tokens, with its own wording
            raise Refused(
                400, f"Input length ({n_prompt}) exceeds model's maximum context length ({max_len})."
            )
        if n_prompt > max_len:
            raise Refused(
                400,
                f"This model's maximum context length is {max_len} tokens. However, your prompt contains at least {n_prompt} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={n_prompt})",
                param="input_tokens",
            )
        room = max_len - n_prompt
        if room == 0:  # vLLM caps max_tokens at the room left, then refuses 0 (whatever was asked)
            raise Refused(
                400,
                "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                param="max_tokens",
            )
        return room if max_tokens is None else min(max_tokens, room)

    def _completion(self, data: dict[str, Any], generation: Generation) -> dict[str, Any]:
        """The non-streamed chat.completion body."""
        cfg = self.config
        options = TokenOptions.of(data)
        gen_ids = [t.id for t in generation.tokens]
        n_prompt = len(generation.prompt_ids)
        logprobs = None
        if options.logprobs:
            logprobs = {"content": [options.logprob_entry(t.id, t.piece) for t in generation.tokens]}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cfg.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(generation),
                    "logprobs": logprobs,
                    "finish_reason": generation.finish,
                    "stop_reason": None,
                    "token_ids": gen_ids if options.inline else None,
                    "routed_experts": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": {
                "prompt_tokens": n_prompt,
                "total_tokens": n_prompt + len(gen_ids),
                "completion_tokens": len(gen_ids),
                "prompt_tokens_details": None,
                "completion_tokens_details": {"reasoning_tokens": 0} if cfg.reasoning_parser else None,
            },
            "prompt_logprobs": None,
            "prompt_token_ids": generation.prompt_ids if options.inline else None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }

    def _message(self, generation: Generation) -> dict[str, Any]:
        parser = self.config.reasoning_parser
        calls = generation.calls
        reasoning_text, content_text = answer_texts(generation.tokens, parser, bool(calls))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content_text if (content_text or not parser or calls) else None,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
        }
        if calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in calls
            ]
        message["reasoning"] = reasoning_text if parser else None
        return message

    async def _stream(
        self, request: web.Request, data: dict[str, Any], generation: Generation
    ) -> web.StreamResponse:
        cfg = self.config
        options = TokenOptions.of(data)
        usage = bool((data.get("stream_options") or {}).get("include_usage"))
        fault = request.get("sim_stream_fault")
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": cfg.model,
        }
        response = web.StreamResponse(
            status=200, headers={"content-type": "text/event-stream; charset=utf-8", **self._headers()}
        )
        await response.prepare(request)
        first_delta = {"role": "assistant", "content": ""}
        first = {
            **head,
            "choices": [{"index": 0, "delta": first_delta, "logprobs": None, "finish_reason": None}],
            "prompt_token_ids": generation.prompt_ids if options.inline else None,
            "prompt_text": None,
        }
        pending = [_sse(first)]
        tokens = stream_tokens(generation.tokens, generation.calls, cfg.reasoning_parser)
        delay = (cfg.latency_ms + cfg.per_token_ms) / 1000
        for position, (tid, piece, delta) in enumerate(tokens):
            if delay > 0:
                await asyncio.sleep(delay)
            delay = cfg.per_token_ms / 1000
            finish = generation.finish if position == len(tokens) - 1 else None
            chunk = self._token_chunk(head, options, (tid, piece, delta), finish, usage)
            if chunk is None:
                continue
            pending.append(_sse(chunk))
            await response.write(b"".join(pending))
            pending = []
            if fault and position >= 2:
                return await self._stream_fault(request, response, fault)
        if fault:
            return await self._stream_fault(request, response, fault)
        if usage:
            pending.append(_sse(self._usage_chunk(head, generation)))
        pending.append(b"data: [DONE]\n\n")
        await response.write(b"".join(pending))
        await response.write_eof()
        return response

    def _token_chunk(
        self,
        head: dict[str, Any],
        options: TokenOptions,
        token: tuple[int, str, dict[str, Any] | None],
        finish: str | None,
        usage: bool,
    ) -> dict[str, Any] | None:
        """One generated token's chunk (`finish` on the last); None for a token vLLM sends no chunk for."""
        tid, piece, delta = token
        last = finish is not None
        if delta is None:
            if not options.inline and not last:
                return None
            delta = {}
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": {"content": [options.logprob_entry(tid, piece)]} if options.logprobs else None,
            "finish_reason": finish,
        }
        if last:
            choice["stop_reason"] = None
        choice["token_ids"] = [tid] if options.inline else None
        chunk: dict[str, Any] = {**head, "choices": [choice]}
        if last and not usage:
            chunk["system_fingerprint"] = self.fingerprint
        return chunk

    def _usage_chunk(self, head: dict[str, Any], generation: Generation) -> dict[str, Any]:
        n_prompt, n_gen = len(generation.prompt_ids), len(generation.tokens)
        counts: dict[str, Any] = {
            "prompt_tokens": n_prompt,
            "total_tokens": n_prompt + n_gen,
            "completion_tokens": n_gen,
        }
        if self.config.reasoning_parser:
            counts["completion_tokens_details"] = {"reasoning_tokens": 0}
        return {**head, "choices": [], "usage": counts, "system_fingerprint": self.fingerprint}

    async def _stream_fault(
        self, request: web.Request, response: web.StreamResponse, mode: str
    ) -> web.StreamResponse:
        if mode == "stream_error":
            error = {
                "error": {
                    "message": "simulated fault: the engine failed mid-stream",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            }
            await response.write(_sse(error) + b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _logprob_entry(tid: int, piece: str, as_ids: bool, top_n: int) -> dict[str, Any]:
    token = f"token_id:{tid}" if as_ids else piece
    lp = -((tid % 997) / 100.0) - 0.001
    top = [{"token": token, "logprob": lp, "bytes": list(token.encode())}][:top_n]
    return {"token": token, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": top}


@dataclass(frozen=True, slots=True)
class GenToken:
    """One generated token: its id, its text, and what it is (a `sim_templates` segment kind, or
    `eos` for the end-of-turn token, which adds no text)."""

    id: int
    piece: str
    kind: str
    call: int = -1


@dataclass(frozen=True, slots=True)
class Generation:
    """One request's scripted turn: the prompt ids, the generated tokens (cut at the limit), the
    tool calls parsed from them and why the turn ended."""

    prompt_ids: list[int]
    tokens: list[GenToken]
    calls: list[dict[str, Any]]
    finish: str


_CALL_KINDS = (CALL_HEAD, CALL_ARGS, MARKUP)


def generated_tokens(template: Template, segments: list[Any]) -> list[GenToken]:
    """The turn as tokens, each segment tokenized on its own (a model writes tokens, not text),
    then the end-of-turn token a finished turn ends with (in the ids, not the text)."""
    out = []
    for segment in segments:
        ids, pieces = template.tokenize(segment.text)
        out += [GenToken(i, p, segment.kind, segment.call) for i, p in zip(ids, pieces, strict=True)]
    out.append(GenToken(template.eos_id, "", "eos"))
    return out


def answer_texts(
    tokens: list[GenToken], reasoning_parser: bool, parsed_calls: bool
) -> tuple[str | None, str]:
    """(reasoning, content) as vLLM returns them: under a reasoning parser the reasoning is its own
    field and the think tags are dropped; parsed tool calls leave their markup out of the text (a
    cut-off call was not parsed, so its markup is text)."""
    reasoning: list[str] = []
    content: list[str] = []
    for token in tokens:
        if token.kind == "eos" or (parsed_calls and token.kind in _CALL_KINDS):
            continue
        if reasoning_parser and token.kind == THINK_TAG:
            continue
        (reasoning if reasoning_parser and token.kind == REASONING else content).append(token.piece)
    return ("".join(reasoning) if reasoning else None), "".join(content)


def stream_tokens(
    tokens: list[GenToken], calls: list[dict[str, Any]], reasoning_parser: bool
) -> list[tuple[int, str, dict[str, Any] | None]]:
    """The generated tokens with the delta vLLM streams for each (None: a token that adds no
    text, such as a think tag under a reasoning parser, tool-call markup, the end-of-turn token).
    A call's first markup token carries its id and name; its arguments stream as fragments."""
    out: list[tuple[int, str, dict[str, Any] | None]] = []
    opened: set[int] = set()
    for token in tokens:
        delta: dict[str, Any] | None
        kind = token.kind
        if kind == "eos":
            delta = None
        elif kind in _CALL_KINDS and calls:
            if kind == CALL_ARGS:
                delta = {
                    "content": None,
                    "tool_calls": [{"index": token.call, "function": {"arguments": token.piece}}],
                }
            elif kind == CALL_HEAD and token.call not in opened:
                opened.add(token.call)
                call = calls[token.call]
                header = {
                    "id": call["id"],
                    "type": "function",
                    "index": token.call,
                    "function": {"name": call["name"]},
                }
                delta = {"content": None, "tool_calls": [header]}
            else:
                delta = None
        elif kind == THINK_TAG and reasoning_parser:
            delta = None
        elif kind == REASONING and reasoning_parser:
            delta = {"reasoning": token.piece}
        else:  # content, or (without a parser) reasoning and think tags, or a cut-off call's markup
            delta = {"content": token.piece}
        out.append((token.id, token.piece, delta))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="vLLM-compatible simulator (for tests, the demo and benchmarks)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--count", type=int, default=1, help="start N instances on consecutive ports")
    parser.add_argument("--model", default="sim-model")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument(
        "--reasoning-parser", action="store_true", help="return think text in the 'reasoning' field"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--per-token-ms", type=float, default=0.0)
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument(
        "--fail-mode",
        default="status",
        choices=["status", "drop", "stall", "malformed", "truncate", "stream_error"],
    )
    parser.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' like vllm serve --api-key"
    )
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument(
        "--template",
        default="chatml",
        choices=sorted(TEMPLATES),
        help="the chat template (and model output) of a model family: chatml, qwen3, mistral, r1",
    )
    parser.add_argument(
        "--ignore-prompt-token-ids",
        action="store_true",
        help="ignore kv_transfer_params.prompt_token_ids (an upstream without prefix support)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.count > 1:
        base = [a for a in (argv if argv is not None else sys.argv[1:])]
        procs = []
        for i in range(args.count):
            extra = ["--port", str(args.port + i), "--count", "1", "--instance-id", str(i)]
            procs.append(
                subprocess.Popen([sys.executable, "-m", "nemo_gym.testing.vllm_simulator", *base, *extra])
            )
        try:
            for proc in procs:
                proc.wait()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    faults = Faults(
        mode=args.fail_mode if args.fail_rate > 0 else None, status=args.fail_status, rate=args.fail_rate
    )
    config = SimConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        reasoning_parser=args.reasoning_parser,
        latency_ms=args.latency_ms,
        per_token_ms=args.per_token_ms,
        instance_id=args.instance_id if args.instance_id is not None else str(args.port),
        api_key=args.api_key,
        honour_prompt_token_ids=not args.ignore_prompt_token_ids,
        template=args.template,
        faults=faults,
    )
    print(
        f"vLLM simulator {config.instance_id} (model {config.model!r}) on http://{args.host}:{args.port}/v1 pid {os.getpid()}",
        flush=True,
    )
    web.run_app(
        Simulator(config).app(), host=args.host, port=args.port, access_log=None, print=None, backlog=4096
    )


if __name__ == "__main__":
    main()
