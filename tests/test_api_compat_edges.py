"""Corners of the NeMo Gym API that environments lean on: a config field named `workers` of the
environment's own, `ServerClient.poll_for_status`, and an agent's rollout-path helpers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from nemo_gym.base_resources_server import BaseResourcesServerConfig
from nemo_gym.base_responses_api_agent import BaseResponsesAPIAgentConfig, SimpleResponsesAPIAgent
from nemo_gym.config import free_port
from nemo_gym.http.server_client import ServerClient


class ListWorkersConfig(BaseResourcesServerConfig):
    workers: list[str] = []


def test_an_environments_own_workers_field_is_not_the_process_count() -> None:
    config = ListWorkersConfig(workers=["vm-a", "vm-b"], num_workers=None)
    assert config.workers == ["vm-a", "vm-b"] and config.process_count == 1
    assert BaseResourcesServerConfig(num_workers=3).process_count == 3
    assert BaseResourcesServerConfig(workers=2).process_count == 2


class _Teapot(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        self.send_response(418)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_poll_for_status() -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _Teapot)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        dead = free_port()
        client = ServerClient(
            {
                "up": {"resources_servers": {"x": {"host": "127.0.0.1", "port": httpd.server_port}}},
                "down": {"resources_servers": {"x": {"host": "127.0.0.1", "port": dead}}},
            }
        )
        assert client.poll_for_status("up") == "success"  # any answer means the server is up
        assert client.poll_for_status("down", timeout_seconds=1) == "connection_error"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_agent_rollout_path_helpers_leave_paths_alone() -> None:
    global_config = {
        "policy_model": {"responses_api_models": {"vllm_model": {"host": "127.0.0.1", "port": 9}}}
    }
    agent = SimpleResponsesAPIAgent(
        config=BaseResponsesAPIAgentConfig(), server_client=ServerClient(global_config)
    )
    assert agent.url_path_for_run("/v1/responses", object()) == "/v1/responses"
    assert agent.url_path_for_request("/v1/responses", None) == "/v1/responses"
    assert agent.base_url_for_run("http://x", object()) == "http://x"
    assert agent.resolve_model_base_url("policy_model") == "http://127.0.0.1:9/v1"


def test_build_server_base_url_from_an_instance_block() -> None:
    from omegaconf import OmegaConf

    from nemo_gym.global_config import get_first_server_config_dict

    client = ServerClient({"judge": {"responses_api_models": {"m": {"host": "127.0.0.1", "port": 8123}}}})
    block = get_first_server_config_dict(client.global_config_dict, "judge")
    assert client._build_server_base_url(block) == "http://127.0.0.1:8123"
    assert client._build_server_base_url({"host": "10.0.0.2", "port": 9}) == "http://10.0.0.2:9"
    assert client._build_server_base_url(OmegaConf.create({"host": "h", "port": 1})) == "http://h:1"


def test_raise_for_status_goes_by_ok() -> None:
    import asyncio
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    import pytest

    from nemo_gym.http.server_client import ServerResponseError, raise_for_status

    asyncio.run(raise_for_status(MagicMock()))  # a mock's ok is truthy: no comparison of its status
    asyncio.run(raise_for_status(SimpleNamespace(status=204)))  # no ok attribute: the status decides

    async def read() -> bytes:
        return b'{"error": "x"}'

    failing = MagicMock(ok=False, status=500, read=read, reason="Internal Server Error")
    with pytest.raises(ServerResponseError):
        asyncio.run(raise_for_status(failing))


def test_model_base_url_resolves_through_the_config_and_build_server_base_url() -> None:
    """NeMo Gym agents' tests give the agent a client with only `global_config_dict` and
    `_build_server_base_url`; a wildcard host is reached on loopback."""
    from functools import partial
    from unittest.mock import MagicMock

    import pytest
    from omegaconf import OmegaConf

    client = MagicMock(spec=ServerClient)
    client.global_config_dict = OmegaConf.create(
        {"policy_model": {"responses_api_models": {"vllm_model": {"host": "model-host", "port": 9000}}}}
    )
    client._build_server_base_url = partial(ServerClient._build_server_base_url, client)
    agent = SimpleResponsesAPIAgent.model_construct(
        config=BaseResponsesAPIAgentConfig(), server_client=client
    )
    assert agent.resolve_model_base_url("policy_model") == "http://model-host:9000/v1"
    client.url_for.assert_not_called()

    wildcard = ServerClient({"policy_model": {"responses_api_models": {"m": {"host": "0.0.0.0", "port": 7}}}})
    agent = SimpleResponsesAPIAgent(config=BaseResponsesAPIAgentConfig(), server_client=wildcard)
    assert agent.resolve_model_base_url("policy_model", "r1") == "http://127.0.0.1:7/ng-rollout/r1/v1"
    with pytest.raises(KeyError, match="no server instance named 'judge'"):
        agent.resolve_model_base_url("judge")
