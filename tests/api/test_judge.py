"""nemo_gym.judge: call_judge against a ServerClient-shaped object, error relabelling, failsafe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from nemo_gym.judge import JudgeError, call_judge, judge_failsafe, reraise_judge_errors
from nemo_gym.openai_utils import NeMoGymResponse

WIRE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_wire"


class _FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body
        self.ok = status < 400
        self.reason = "X"
        self.request_info = None
        self.history = ()
        self.headers = {}
        self.url = "http://judge/v1/responses"

    async def read(self) -> bytes:
        return self._body

    async def json(self):
        return json.loads(self._body)


class _FakeClient:
    def __init__(self, response=None, exc: Exception | None = None) -> None:
        self.response, self.exc, self.calls = response, exc, []

    async def post(self, server_name: str, url_path: str, json=None, **kwargs):
        self.calls.append((server_name, url_path, json))
        if self.exc is not None:
            raise self.exc
        return self.response


async def test_call_judge_parses_response():
    body = (WIRE / "responses_basic.json").read_bytes()
    client = _FakeClient(_FakeResponse(200, body))
    payload = {"input": "judge this"}
    result = await call_judge(
        client,
        server_name="judge_model",
        url_path="/v1/responses",
        json=payload,
        response_model=NeMoGymResponse,
    )
    assert isinstance(result, NeMoGymResponse)
    assert result.output[-1].content[0].text == json.loads(body)["output"][0]["content"][0]["text"]
    assert client.calls == [("judge_model", "/v1/responses", payload)]


async def test_call_judge_http_error_is_judge_error():
    client = _FakeClient(_FakeResponse(500, b'{"error": {"message": "boom"}}'))
    with pytest.raises(JudgeError):
        await call_judge(
            client, server_name="j", url_path="/v1/responses", json={}, response_model=NeMoGymResponse
        )


async def test_call_judge_transport_and_parse_errors():
    with pytest.raises(JudgeError, match="ConnectionError: down"):
        await call_judge(
            _FakeClient(exc=ConnectionError("down")),
            server_name="j",
            url_path="/v1/responses",
            json={},
            response_model=NeMoGymResponse,
        )
    with pytest.raises(JudgeError, match="ValidationError"):
        await call_judge(
            _FakeClient(_FakeResponse(200, b'{"not": "a response"}')),
            server_name="j",
            url_path="/v1/responses",
            json={},
            response_model=NeMoGymResponse,
        )


async def test_reraise_judge_errors():
    async def ok():
        return 5

    async def bad():
        raise KeyError("k")

    async def already():
        raise JudgeError("kept")

    assert await reraise_judge_errors(ok()) == 5
    with pytest.raises(JudgeError, match="KeyError: 'k'") as info:
        await reraise_judge_errors(bad())
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(JudgeError, match="^kept$"):
        await reraise_judge_errors(already())


class _Body(BaseModel):
    response: dict
    extra: int = 1


async def test_judge_failsafe_returns_masked_row():
    class Server:
        @judge_failsafe
        async def verify(self, body: _Body):
            raise JudgeError("judge down")

    result = await Server().verify(body=_Body(response={"id": "r"}))
    data = json.loads(result.body)
    assert data == {
        "response": {"id": "r"},
        "extra": 1,
        "reward": 0.0,
        "mask_sample": True,
        "failure_kind": "judge_failed",
        "failure_reason": "judge down",
        "instance_config": {"mask_sample": True},
        "_ng_failure_class": "judge_failed",
        "_ng_failure_judge_error": "judge down",
    }


async def test_judge_failsafe_passes_through_success_and_other_errors():
    @judge_failsafe
    async def verify(body: _Body):
        if body.extra == 2:
            raise ValueError("bug")
        return {"reward": 1.0}

    assert await verify(body=_Body(response={})) == {"reward": 1.0}
    with pytest.raises(ValueError):
        await verify(body=_Body(response={}, extra=2))
