"""agent_tools: the URLs a sandboxed harness may use and the egress policy for them."""

from __future__ import annotations

import pytest

from nemo_gym.sandbox import agent_tools


def test_sandbox_server_url(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {
        "wild": "http://0.0.0.0:8000",
        "wild6": "http://[::]:8001",
        "lo": "http://127.0.0.1:9",
        "ok": "http://10.0.0.7:80",
    }
    monkeypatch.setattr(agent_tools, "get_server_url", urls.__getitem__)
    assert agent_tools.sandbox_server_url("wild") == "http://127.0.0.1:8000"
    assert agent_tools.sandbox_server_url("wild6") == "http://[::1]:8001"
    assert agent_tools.sandbox_server_url("lo") == "http://127.0.0.1:9"
    assert agent_tools.sandbox_server_url("ok", require_reachable=True) == "http://10.0.0.7:80"
    with pytest.raises(ValueError, match="only reachable from this host"):
        agent_tools.sandbox_server_url("lo", require_reachable=True)


def test_restricted_network_policy() -> None:
    policy = agent_tools.restricted_network_policy(
        "opensandbox", ["http://10.0.0.7:80/v1", "https://model.example:443", "http://10.0.0.7:81"]
    )
    assert policy == {
        "defaultAction": "deny",
        "egress": [{"action": "allow", "target": "10.0.0.7"}, {"action": "allow", "target": "model.example"}],
    }
    with pytest.raises(ValueError) as refused:
        agent_tools.restricted_network_policy("docker", ["http://10.0.0.7"])
    assert str(refused.value) == (
        "restricted network access needs a provider that enforces egress policies (OpenSandbox: "
        "`opensandbox`), not 'docker'; the isolated provider with network: none blocks all egress instead"
    )
    with pytest.raises(ValueError, match="only reachable from this host"):
        agent_tools.restricted_network_policy("opensandbox", ["http://localhost:8000"])
