"""The one reader of OpenAI-style error bodies, whatever their shape, and the one retry policy:
the statuses each client retries, and the OpenAI-compatible client's retries logged through
`logging` and counted, as the upstream pool's are."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nemo_gym import openai_utils
from nemo_gym.exceptions import ErrorBody, error_body_of, parse_error_body
from nemo_gym.http.openai_client import NeMoGymAsyncOpenAI, PermanentEndpointError
from nemo_gym.http.retry import GATEWAY_STATUSES, RATE_LIMIT_STATUSES, RETRY_STATUSES
from nemo_gym.http.server_client import close_shared_client, message_from_body
from nemo_gym.upstream.errors import upstream_http_error


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'{"error":{"message":"no","type":"invalid_request_error","param":"model","code":404}}',
            ErrorBody("no", "invalid_request_error", "model", 404),
        ),
        (b'{"error":"Unauthorized"}', ErrorBody("Unauthorized")),
        (
            b'{"object":"error","message":"old vLLM","type":"BadRequestError","param":null,"code":400}',
            ErrorBody("old vLLM", "BadRequestError", None, 400),
        ),
        (b'{"detail":"Not Found"}', ErrorBody("Not Found")),
        (b'{"error":{"message":null}}', ErrorBody("")),
        (b"  <html>Bad Gateway</html>\n", ErrorBody("<html>Bad Gateway</html>")),
        (b'{"choices": []}', ErrorBody('{"choices": []}')),
        (b"", ErrorBody("")),
    ],
    ids=["nested", "string", "flat", "detail", "null-message", "html", "other-json", "empty"],
)
def test_every_shape_of_error_body(content: bytes, expected: ErrorBody) -> None:
    assert parse_error_body(content) == expected
    assert message_from_body(content) == expected.message


def test_long_bodies_are_cut_and_stream_chunks_are_not_errors() -> None:
    assert parse_error_body(b"x" * 5000, limit=100) == ErrorBody("x" * 100)
    assert error_body_of({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": []}) is None
    assert error_body_of(["not", "a", "dict"]) is None


def test_an_empty_upstream_error_body_still_says_something() -> None:
    error = upstream_http_error(500, b"", {})
    assert (error.status, error.message) == (500, "upstream returned an empty error body")


def test_one_table_of_retryable_statuses() -> None:
    assert GATEWAY_STATUSES == (502, 503, 504)
    assert openai_utils.RATE_LIMIT_ERROR_CODES == list(RATE_LIMIT_STATUSES) == [429, 502, 503, 504, 520]
    assert openai_utils.RETRY_ERROR_CODES == list(RETRY_STATUSES) == [429, 502, 503, 504, 520, 404, 408, 500]
    assert openai_utils.NeMoGymAsyncOpenAI is NeMoGymAsyncOpenAI  # NeMo Gym's import path


@pytest.fixture
async def endpoint():
    statuses: list[int] = []

    async def responses(request: web.Request) -> web.Response:
        status = statuses.pop(0) if statuses else 200
        if status == 200:
            return web.json_response({"id": "r"})
        if status == 429:
            return web.json_response(
                {"error": {"code": "insufficient_quota", "message": "spent"}}, status=429
            )
        return web.json_response({"error": "busy"}, status=status)

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server, statuses
    await close_shared_client()
    await server.close()


async def test_openai_client_retries_are_logged_and_counted(
    endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    server, statuses = endpoint
    statuses += [503, 500]
    url = str(server.make_url("/v1"))
    client = NeMoGymAsyncOpenAI(base_url=url, api_key="k", retry_sleep_seconds=0)
    caplog.set_level(logging.WARNING, logger="nemo_gym.http.openai_client")
    assert await client.create_response(input="hi") == {"id": "r"}
    assert client.retries == {"status_503": 1, "status_500": 1}
    assert [record.getMessage() for record in caplog.records] == [
        f'retrying POST {url}/responses (retry 1 of at most 2, reason status_503): HTTP 503: {{"error": "busy"}}',
        f'retrying POST {url}/responses (retry 2 of at most 2, reason status_500): HTTP 500: {{"error": "busy"}}',
    ]


async def test_a_spent_key_stops_the_client_without_retrying(endpoint) -> None:
    server, statuses = endpoint
    statuses += [429, 200]
    client = NeMoGymAsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", retry_sleep_seconds=0)
    with pytest.raises(PermanentEndpointError) as caught:
        await client.create_response(input="hi")
    assert caught.value.status == 429 and client.retries == {}
    with pytest.raises(PermanentEndpointError):
        await client.create_response(input="again")
    assert statuses == [200]  # the second call was never sent
