"""Pieces of the requests tests send: the weather tool the simulator's scripted calls use, an id
as OpenAI clients make them, the training config's override, and a finished model answer."""

from __future__ import annotations

from typing import Any

WEATHER_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
# 28 characters, as OpenAI clients make them (longer than some families' tool parsers accept).
OPENAI_CALL_ID = "call_8f3KqZ2mW7xN4vB9pL1sT6y"
TRAINING_CONFIG = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model_for_training.yaml]"


def assistant_response(text: str) -> dict[str, Any]:
    """A completed Responses API answer holding one assistant message: what a verifier or an
    environment server receives from an agent's model call."""
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1.0,
        "model": "m",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
