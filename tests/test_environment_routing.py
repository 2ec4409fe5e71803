"""Which server a rollout row goes to when a config declares environment servers, what it is
sent, and what is stored from the answer (nemo_gym.rollouts.environment_routing)."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_gym.rollouts.environment_routing import (
    AgentWithoutEnvironmentServerError,
    AmbiguousEnvironmentServerError,
    Dispatch,
    EnvironmentRoutes,
    EnvironmentRoutingConfig,
    _environment_server_for_agent,
    _environment_server_for_config_row,
    _environment_servers_by_agent,
    _episode_request_body,
    _is_episode_response,
    record_from_answer,
)


def agent(name: str) -> dict[str, Any]:
    return {name: {"responses_api_agents": {"simple_agent": {"entrypoint": "app.py"}}}}


CONFIG: dict[str, Any] = {
    **agent("weather_agent"),
    **agent("judge_agent"),
    **agent("direct_agent"),
    "weather_relay": {
        "environment_servers": {
            "legacy_agent": {
                "entrypoint": "app.py",
                "agent_server": {"type": "responses_api_agents", "name": "weather_agent"},
            }
        }
    },
    "judge_turn": {
        "environment_servers": {
            "single_agent_turn": {
                "entrypoint": "app.py",
                "resources_server": {"type": "resources_servers", "name": "judge"},
                # `agent_server` may leave its type out.
                "agent_server": {"name": "judge_agent"},
            }
        }
    },
    "duel": {
        "environment_servers": {
            "two_player": {
                "entrypoint": "app.py",
                "user": {"type": "responses_api_agents", "name": "judge_agent"},
                "assistant": {"type": "responses_api_agents", "name": "weather_agent"},
            }
        }
    },
    "policy_model": {"responses_api_models": {"vllm_model": {}}},
}
FLAT = {"responses_create_params": {"input": "hi"}, "_ng_task_index": 3, "_ng_rollout_index": 1}
MATERIALIZED = {
    "task_id": {"taskset": "weather:train", "task_id": "17"},
    "task_input": {"responses_create_params": {"input": "hi"}, "city": "Oslo"},
    "_ng_task_index": 3,
    "_ng_rollout_index": 1,
    "_ng_attempt_index": 2,
}


def test_servers_by_agent_follow_every_agent_reference() -> None:
    assert _environment_servers_by_agent(CONFIG) == {
        "weather_agent": ["weather_relay", "duel"],
        "judge_agent": ["judge_turn", "duel"],
    }


def test_one_server_per_agent_or_a_clear_error() -> None:
    assert _environment_server_for_agent("solo", {"solo": ["relay"]}) == "relay"
    with pytest.raises(AgentWithoutEnvironmentServerError, match="agent 'x' has no environment server"):
        _environment_server_for_agent("x", {})
    with pytest.raises(
        AmbiguousEnvironmentServerError, match=r"several environment servers: \['duel', 'weather_relay'\]"
    ):
        _environment_server_for_agent("weather_agent", _environment_servers_by_agent(CONFIG))


def test_routing_keys() -> None:
    by_agent = EnvironmentRoutingConfig()
    legacy = EnvironmentRoutingConfig(
        environment_routing_mode="legacy", environment_server_name="weather_relay"
    )
    tasksets = EnvironmentRoutingConfig(
        environment_routing_mode="taskset", environment_server_routes={"weather:train": "judge_turn"}
    )
    assert _environment_server_for_config_row(FLAT, by_agent) is None
    assert _environment_server_for_config_row(FLAT, legacy) == "weather_relay"
    assert _environment_server_for_config_row(MATERIALIZED, tasksets) == "judge_turn"
    with pytest.raises(ValueError, match="takes only materialized rows"):
        _environment_server_for_config_row(FLAT, tasksets)
    with pytest.raises(ValueError, match="set environment_server_routes.weather:train"):
        _environment_server_for_config_row(MATERIALIZED, by_agent)


def test_episode_request_body_keeps_the_attempt_apart() -> None:
    assert _episode_request_body(MATERIALIZED) == {
        "episode_id": {"rollout_id": "3-1", "attempt": 2},
        "task": {"task_id": MATERIALIZED["task_id"], "task_input": MATERIALIZED["task_input"]},
    }
    assert (
        _episode_request_body({**MATERIALIZED, "_ng_rollout_id": "mine"})["episode_id"]["rollout_id"]
        == "mine"
    )
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        _episode_request_body({**MATERIALIZED, "_ng_attempt_index": True})


def test_dispatch_per_row_kind() -> None:
    routes = EnvironmentRoutes.from_config(
        {**CONFIG, "environment_server_routes": {"weather:train": "judge_turn"}}
    )
    assert routes.declared
    assert routes.dispatch(FLAT, "direct_agent") == Dispatch(server="direct_agent", body=FLAT)
    with pytest.raises(AmbiguousEnvironmentServerError):
        routes.dispatch(FLAT, "weather_agent")
    episode = routes.dispatch(MATERIALIZED, None)
    assert (episode.server, episode.environment_server_type) == ("judge_turn", "single_agent_turn")
    assert episode.body == _episode_request_body(MATERIALIZED)

    single = EnvironmentRoutes.from_config({k: v for k, v in CONFIG.items() if k != "duel"})
    relayed = single.dispatch(FLAT, "weather_agent")
    assert relayed == Dispatch(
        server="weather_relay",
        body=FLAT,
        environment_server="weather_relay",
        environment_server_type="legacy_agent",
    )
    assert not EnvironmentRoutes.from_config({"policy_model": CONFIG["policy_model"]}).declared


def test_routes_refuse_servers_the_config_does_not_declare() -> None:
    with pytest.raises(ValueError, match=r"environment servers \['nowhere'\] are not in the running config"):
        EnvironmentRoutes.from_config(CONFIG, {"environment_server_routes": {"t": "nowhere"}})
    with pytest.raises(ValueError, match="legacy needs environment_server_name"):
        EnvironmentRoutes.from_config(CONFIG, {"environment_routing_mode": "legacy"})


def test_records_from_answers() -> None:
    task = MATERIALIZED["task_id"]
    episode = Dispatch("judge_turn", {}, "judge_turn", "single_agent_turn")
    answer = {
        "episode_id": {"rollout_id": "3-1", "attempt": 2},
        "task_id": task,
        "result": {"reward": 1.0, "x": 1},
    }
    assert _is_episode_response(answer) and not _is_episode_response({"reward": 1.0})
    assert record_from_answer(MATERIALIZED, answer, episode) == {
        "reward": 1.0,
        "x": 1,
        "_ng_task_id": task,
        "_ng_environment_server": "judge_turn",
        "_ng_result_type": "single_agent_turn",
    }
    failed = {**answer, "result": None, "failure": {"failure_reason": "agent down", "terminal": True}}
    del failed["result"]
    assert (
        record_from_answer(MATERIALIZED, failed, episode)["_ng_failure_class"] == "environment_server_failed"
    )
    relay = Dispatch("weather_relay", FLAT, "weather_relay", "legacy_agent")
    assert record_from_answer(FLAT, {"reward": 0.0}, relay) == {
        "reward": 0.0,
        "_ng_environment_server": "weather_relay",
        "_ng_result_type": "legacy_agent",
    }
    direct = {"reward": 0.5}
    assert record_from_answer(FLAT, direct, Dispatch("direct_agent", FLAT)) is direct
