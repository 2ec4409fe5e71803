"""What the real-vLLM tests share: where the servers are, the forced tool they call, greedy
sampling, and the adapter started in front of a server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from nemo_gym.testing.processes import NgRun, ng_run

URL = os.environ.get("REAL_VLLM_URL", "http://127.0.0.1:18300")
R1_URL = os.environ.get("REAL_VLLM_R1_URL", "http://127.0.0.1:18301")
TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
GREEDY = {"temperature": 0.0, "seed": 1}


def model_of(url: str) -> str:
    try:
        return httpx.get(f"{url}/v1/models", timeout=5).json()["data"][0]["id"]
    except httpx.HTTPError:
        pytest.skip(f"no real vLLM at {url}; run `make test-real-vllm`")


def adapter(url: str, *overrides: str) -> Iterator[tuple[NgRun, str]]:
    with ng_run(
        "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]",
        f"+policy_base_url={url}/v1",
        "+policy_api_key=EMPTY",
        f"+policy_model_name={model_of(url)}",
        *overrides,
    ) as run:
        yield run, run.url_of("policy_model")
