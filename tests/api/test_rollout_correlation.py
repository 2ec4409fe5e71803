"""nemo_gym.rollout_correlation: rollout ids from run bodies, the context var, the path-prefix middleware."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from nemo_gym.base_resources_server import BaseRunRequest
from nemo_gym.config_types import ROLLOUT_PATH_PREFIX
from nemo_gym.rollout_correlation import (
    ROLLOUT_ID_PATTERN,
    RolloutContextMiddleware,
    current_rollout_id,
    maybe_rollout_id_from_run_body,
    rollout_context,
)

PARAMS = {"input": "hi"}


def test_prefix_constant():
    assert ROLLOUT_PATH_PREFIX == "ng-rollout"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"_ng_task_index": 3, "_ng_rollout_index": 1}, "3-1"),
        ({"_ng_task_index": 0, "_ng_rollout_index": 0}, "0-0"),
        ({"_ng_task_index": 3, "_ng_rollout_index": 1, "_ng_attempt_index": 0}, "3-1"),
        ({"_ng_task_index": 3, "_ng_rollout_index": 1, "_ng_attempt_index": 2}, "3-1-a2"),
        ({"_ng_task_index": 3, "_ng_rollout_index": 1, "_ng_attempt_index": "2"}, "3-1-a2"),
        ({"_ng_rollout_id": "run.7_x", "_ng_task_index": 3, "_ng_rollout_index": 1}, "run.7_x"),
        ({"_ng_rollout_id": "abc", "_ng_attempt_index": 1}, "abc-a1"),
        ({"_ng_task_index": 3}, None),
        ({"_ng_rollout_index": 1}, None),
        ({}, None),
    ],
)
def test_id_from_mapping(body, expected):
    assert maybe_rollout_id_from_run_body(body) == expected


class _RowRequest(BaseRunRequest):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


def test_id_from_run_request_models():
    row = {"responses_create_params": PARAMS, "_ng_task_index": 5, "_ng_rollout_index": 2}
    assert maybe_rollout_id_from_run_body(_RowRequest.model_validate(row)) == "5-2"
    explicit = _RowRequest.model_validate({**row, "_ng_rollout_id": "given", "_ng_attempt_index": 3})
    assert maybe_rollout_id_from_run_body(explicit) == "given-a3"
    # The base request keeps only the explicit id (undeclared row fields are dropped).
    assert maybe_rollout_id_from_run_body(BaseRunRequest.model_validate(row)) is None
    assert (
        maybe_rollout_id_from_run_body(BaseRunRequest.model_validate({**row, "_ng_rollout_id": "r1"})) == "r1"
    )
    assert (
        maybe_rollout_id_from_run_body(_RowRequest.model_validate({"responses_create_params": PARAMS}))
        is None
    )


def test_id_from_plain_model_attributes():
    class Body(BaseModel):
        model_config = ConfigDict(extra="allow")

    assert (
        maybe_rollout_id_from_run_body(Body.model_validate({"_ng_task_index": 1, "_ng_rollout_index": 4}))
        == "1-4"
    )
    assert maybe_rollout_id_from_run_body(Body()) is None


@pytest.mark.parametrize("body", [None, "3-1", 7, ["_ng_task_index"]])
def test_non_bodies_have_no_id(body):
    assert maybe_rollout_id_from_run_body(body) is None


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "-x", "sp ace", 12])
def test_malformed_explicit_id_is_rejected(bad):
    with pytest.raises(ValueError, match="_ng_rollout_id"):
        maybe_rollout_id_from_run_body({"_ng_rollout_id": bad})


def test_pattern():
    assert ROLLOUT_ID_PATTERN.match("A9._-z")
    assert not ROLLOUT_ID_PATTERN.match("_x")


def test_context_sets_and_restores():
    assert current_rollout_id() is None
    with rollout_context("outer"):
        assert current_rollout_id() == "outer"
        with rollout_context(None):
            assert current_rollout_id() is None
        with rollout_context("inner"):
            assert current_rollout_id() == "inner"
        assert current_rollout_id() == "outer"
    assert current_rollout_id() is None


def test_context_restores_after_an_exception():
    with pytest.raises(RuntimeError), rollout_context("x"):
        raise RuntimeError
    assert current_rollout_id() is None


def test_context_is_per_task():
    async def one(rid: str) -> str | None:
        with rollout_context(rid):
            await asyncio.sleep(0)
            return current_rollout_id()

    async def both():
        return await asyncio.gather(one("a"), one("b"))

    assert asyncio.run(both()) == ["a", "b"]


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/where/{tail}")
    async def where(tail: str) -> dict:
        return {"tail": tail, "rollout": current_rollout_id()}

    app.add_middleware(RolloutContextMiddleware)
    return app


def test_middleware_strips_prefix_and_sets_context():
    client = TestClient(_app())
    assert client.get("/ng-rollout/7-2-a1/where/z").json() == {"tail": "z", "rollout": "7-2-a1"}
    assert client.get("/where/z").json() == {"tail": "z", "rollout": None}


@pytest.mark.parametrize("path", ["/ng-rollout/.bad/where/z", "/ng-rollout/where", "/ng-rollout//where/z"])
def test_middleware_leaves_other_paths_alone(path):
    assert TestClient(_app()).get(path).status_code == 404


def test_middleware_passes_non_http_scopes():
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope["path"], current_rollout_id()))

    scope = {"type": "websocket", "path": "/ng-rollout/abc/x"}
    asyncio.run(RolloutContextMiddleware(inner)(scope, None, None))
    assert seen == [("/ng-rollout/abc/x", None)]
