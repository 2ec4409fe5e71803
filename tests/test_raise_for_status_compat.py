"""`raise_for_status` as NeMo Gym environments see it: the error is named `ClientResponseError`
(they record `type(error).__name__`), and an answer stand-in with only a status, `ok` and a
`request_info` (what aiohttp's own error needs) is enough to raise it."""

from __future__ import annotations

import pickle

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from nemo_gym.http.server_client import ServerResponseError
from nemo_gym.server_utils import raise_for_status


class StandInAnswer:
    """What environments' tests hand in: no `method`, `url` or `reason` of its own."""

    ok = False
    status = 429

    def __init__(self) -> None:
        self.request_info = aiohttp.RequestInfo(
            URL("http://judge/v1/responses"),
            "POST",
            CIMultiDictProxy(CIMultiDict()),
            URL("http://judge/v1/responses"),
        )

    async def read(self) -> bytes:
        return b'{"error": "rate limit"}'


async def test_the_error_is_named_as_aiohttps_and_is_ours_too() -> None:
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        await raise_for_status(StandInAnswer())  # type: ignore[arg-type]

    error = caught.value
    assert type(error).__name__ == "ClientResponseError"
    assert isinstance(error, ServerResponseError)
    assert error.status == 429
    assert str(error) == 'POST http://judge/v1/responses returned 429: {"error": "rate limit"}'
    assert error.response_content == b'{"error": "rate limit"}'


async def test_it_pickles_with_status_url_and_body() -> None:
    with pytest.raises(ServerResponseError) as caught:
        await raise_for_status(StandInAnswer())  # type: ignore[arg-type]

    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy).__name__ == "ClientResponseError"
    assert (copy.status, copy.method, copy.url) == (429, "POST", "http://judge/v1/responses")
    assert copy.response_content == b'{"error": "rate limit"}'


class RaisesItsOwn(StandInAnswer):
    def raise_for_status(self) -> None:
        raise RuntimeError("close failure")


class RaisesAiohttps(StandInAnswer):
    def raise_for_status(self) -> None:
        raise aiohttp.ClientResponseError(
            self.request_info, (), status=self.status, message="Too Many Requests"
        )


async def test_an_answers_own_error_is_raised_as_it_is() -> None:
    with pytest.raises(RuntimeError, match="^close failure$"):
        await raise_for_status(RaisesItsOwn())  # type: ignore[arg-type]


async def test_aiohttps_error_from_a_stand_in_is_raised_with_its_body() -> None:
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        await raise_for_status(RaisesAiohttps())  # type: ignore[arg-type]
    assert type(caught.value) is aiohttp.ClientResponseError
    assert caught.value.message == "Too Many Requests"
    assert caught.value.response_content == b'{"error": "rate limit"}'  # type: ignore[attr-defined]


class Stream:
    async def read(self) -> bytes:
        return b"from the stream"


class WithContentStream(StandInAnswer):
    """As aiohttp's answer has it, the body is on `content.read()` (NeMo Gym reads it there)."""

    content = Stream()

    async def read(self) -> bytes:
        raise AssertionError("read() is not where a stand-in's body is taken from")


async def test_a_stand_ins_body_comes_from_its_content_stream() -> None:
    with pytest.raises(ServerResponseError) as caught:
        await raise_for_status(WithContentStream())  # type: ignore[arg-type]
    assert caught.value.response_content == b"from the stream"
