"""Session routing: round-robin, stickiness, LRU bound, hash mode, dead upstreams."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nemo_gym.upstream.router import SessionRouter
from responses_api_models.vllm_model.config import VLLMModelConfig


def test_round_robin_then_sticky() -> None:
    router = SessionRouter(2)
    assert [router.route(s) for s in ("a", "b", "c")] == [0, 1, 0]
    assert [router.route(s) for s in ("c", "b", "a")] == [0, 1, 0]
    assert [router.route(None) for _ in range(3)] == [1, 0, 1]  # no session: every call takes a turn


def test_table_is_a_bounded_lru() -> None:
    router = SessionRouter(3, max_sessions=2)
    assert [router.route(s) for s in ("a", "b")] == [0, 1]
    router.route("a")  # a is now most recent; b is the oldest
    assert router.route("c") == 2 and len(router) == 2
    assert router.route("a") == 0  # kept
    assert router.route("b") == 0  # evicted: assigned anew (round-robin continues at 0)


def test_dead_upstream_is_skipped_and_sessions_move_to_the_next() -> None:
    router = SessionRouter(3)
    assert [router.route(s) for s in ("a", "b", "c")] == [0, 1, 2]
    router.down.add(1)
    assert router.route("b") == 2  # re-pinned to the next one along
    assert router.route("d") == 0 and router.route("e") == 2  # new sessions skip 1
    router.down.discard(1)
    assert router.route("b") == 2  # stays where it moved


def test_hash_mode_is_stable_across_router_instances() -> None:
    first, second = SessionRouter(4, mode="hash"), SessionRouter(4, mode="hash")
    ids = [f"session-{i}" for i in range(200)]
    picks = [first.route(s) for s in ids]
    assert picks == [second.route(s) for s in reversed(ids)][::-1]
    assert set(picks) == {0, 1, 2, 3}


def test_workers_select_hash_routing() -> None:
    base = {"base_url": "http://a:1/v1", "api_key": "k", "model": "m"}
    assert VLLMModelConfig.model_validate({**base, "workers": 2}).routing == "hash"
    assert VLLMModelConfig.model_validate(base).routing == "round_robin"
    with pytest.raises(ValidationError, match="workers > 1 needs routing: hash"):
        VLLMModelConfig.model_validate({**base, "workers": 2, "routing": "round_robin"})
    with pytest.raises(ValidationError, match="is not an http"):
        VLLMModelConfig.model_validate({**base, "base_url": "a:1/v1"})


def test_header_breaking_values_are_refused_without_echoing_the_key() -> None:
    base = {"base_url": "http://a:1/v1", "api_key": "k", "model": "m"}
    with pytest.raises(ValidationError) as caught:
        VLLMModelConfig.model_validate({**base, "api_key": "sk-SECRET123\nx-injected: 1"})
    error = caught.value.errors()[0]
    assert error["loc"] == ("api_key",)
    assert (
        error["msg"]
        == "Value error, header 'authorization' contains a line break or NUL character (check how the value was pasted)"
    )
    assert "SECRET123" not in error["msg"]
    with pytest.raises(ValidationError, match="contains whitespace or control characters"):
        VLLMModelConfig.model_validate({**base, "base_url": "http://a:1/v1\r\nhost: evil"})
