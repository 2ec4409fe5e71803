"""What `make bench`'s load rows send: the request bodies and, per scenario, the adapter config
that serves it. Shared by the load rows (`python -m nemo_gym.bench`) and the instruction counts
(`python -m nemo_gym.bench.instructions`), so both measure the same requests."""

from __future__ import annotations

from typing import Any

import orjson

from nemo_gym.bench.fast_upstream import TURN1_GEN, TURN1_PROMPT

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
RESPONSES_BODY = orjson.dumps(
    {
        "input": [
            {"role": "developer", "content": "Use the get_weather tool, then answer briefly."},
            {"role": "user", "content": "What is the weather in Paris?"},
        ],
        "tools": [WEATHER_TOOL],
    }
)
# The second turn of a rollout in token mode: the first turn's ids come back on its function
# call, so the adapter splices (one /tokenize before the generation instead of beside it).
TURN2_RESPONSES_BODY = orjson.dumps(
    {
        "input": [
            *orjson.loads(RESPONSES_BODY)["input"],
            {
                "type": "function_call",
                "call_id": "chatcmpl-tool-9fcd95b0593843c3",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
                "prompt_token_ids": TURN1_PROMPT,
                "generation_token_ids": TURN1_GEN,
                "generation_log_probs": [-0.5] * len(TURN1_GEN),
            },
            {"type": "function_call_output", "call_id": "chatcmpl-tool-9fcd95b0593843c3", "output": "cold"},
        ],
        "tools": [WEATHER_TOOL],
    }
)
# A long generation (the upstream answers "max_tokens":1000 with 1,000 tokens): what per-token
# work costs at RL lengths. Measured at concurrency ≤ 32 only (each answer is ~90 KB).
LONG_RESPONSES_BODY = orjson.dumps({**orjson.loads(RESPONSES_BODY), "max_output_tokens": 1000})
CHAT_BODY = orjson.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
    }
)

DEFAULT_SCENARIOS = (
    "direct,responses,chat,token_tokenize,token_inline,token_spliced,token_unspliced,"
    "responses_aiohttp,token_tokenize_aiohttp,long,workers2,streaming,sessions,rollouts,token_context,"
    "trainer_api"
)
# Scenario → (adapter config key, its overrides, path, body). Adapters are shared by key.
ADAPTER_SCENARIOS: dict[str, tuple[str, dict[str, Any], str, bytes]] = {
    "responses": ("plain", {}, "/v1/responses", RESPONSES_BODY),
    "chat": ("plain", {}, "/v1/chat/completions", CHAT_BODY),
    "token_tokenize": ("token", {"return_token_id_information": True}, "/v1/responses", RESPONSES_BODY),
    "token_inline": (
        "inline",
        {"return_token_id_information": True, "request_prompt_and_generation_token_ids": True},
        "/v1/responses",
        RESPONSES_BODY,
    ),
    "token_spliced": ("token", {"return_token_id_information": True}, "/v1/responses", TURN2_RESPONSES_BODY),
    "token_unspliced": (
        "token_off",
        {"return_token_id_information": True, "prefix_token_ids": "off"},
        "/v1/responses",
        TURN2_RESPONSES_BODY,
    ),
}
# The same plain-HTTP scenarios through aiohttp used directly (the lean client's rival).
for _lean in ("responses", "chat", "token_tokenize"):
    _key, _overrides, _path, _body = ADAPTER_SCENARIOS[_lean]
    ADAPTER_SCENARIOS[f"{_lean}_aiohttp"] = (
        f"{_key}_aiohttp",
        {**_overrides, "upstream_client": "aiohttp"},
        _path,
        _body,
    )
# The long-generation rows: (adapter config key, its overrides, label).
LONG_SCENARIOS = (
    ("plain", {}, "responses, 1,000-token generation"),
    ("token", {"return_token_id_information": True}, "token_tokenize, 1,000-token generation"),
    ("inline", ADAPTER_SCENARIOS["token_inline"][1], "token_inline, 1,000-token generation"),
)
