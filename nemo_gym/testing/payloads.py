"""Pieces of the requests the adapter's tests send: the weather tool the simulator's scripted
calls use, an id as OpenAI clients make them, and the training config's override."""

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
