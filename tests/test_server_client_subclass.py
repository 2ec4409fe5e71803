"""ServerClient subclassed as NeMo Gym environments' tests subclass its pydantic model: fields of
their own given as keywords, mutable defaults that every client gets a copy of, `model_construct`."""

from __future__ import annotations

import pytest

from nemo_gym.http.server_client import ServerClient


class RecordingClient(ServerClient):
    calls: list[str] = []
    by_path: dict[str, int] = {}
    label: str = "default"


def test_declared_fields_are_taken_as_keywords() -> None:
    client = RecordingClient(global_config_dict={"policy_base_url": "http://x"}, calls=["a"], label="mine")

    assert client.calls == ["a"]
    assert client.label == "mine"
    assert client.global_config == {"policy_base_url": "http://x"}


def test_mutable_defaults_are_not_shared_between_clients() -> None:
    first = RecordingClient()
    second = RecordingClient()

    first.calls.append("/verify")
    first.by_path["/verify"] = 1

    assert second.calls == []
    assert second.by_path == {}
    assert RecordingClient.calls == []
    assert RecordingClient.by_path == {}
    assert first.label == second.label == "default"


def test_model_construct_builds_the_subclass_with_its_fields() -> None:
    client = RecordingClient.model_construct(head_server_config=None, global_config_dict={}, calls=["x"])

    assert isinstance(client, RecordingClient)
    assert client.calls == ["x"]
    assert client.by_path == {}


def test_an_undeclared_keyword_is_an_error_naming_it() -> None:
    with pytest.raises(TypeError, match="RecordingClient\\(\\) got unexpected keyword arguments: nope"):
        RecordingClient(nope=1)
