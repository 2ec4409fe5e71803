"""A minimal vLLM-shaped responder: canned vLLM bodies over a raw asyncio protocol.

The simulator tokenizes and scripts every reply, which costs more CPU than the adapter
itself; to measure the adapter, the upstream must be (nearly) free. Bodies follow the real
captures: a think block plus a tool call, logprobs with "token_id:N" tokens on request,
inline token ids on request, and /tokenize.
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import orjson

_GEN_IDS = [1668, 785, 1207, 2345, 1669, 1670, 4567, 8901, 1671]


def _chat_body(logprobs: bool, inline: bool) -> bytes:
    message = {
        "role": "assistant",
        "content": "<think>The user asks about the weather in Paris. I should call get_weather.</think>",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {
                "id": "chatcmpl-tool-9fcd95b0593843c3",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
        "reasoning": None,
    }
    lp = {
        "content": [
            {"token": f"token_id:{t}", "logprob": -0.125 * (i + 1), "bytes": [], "top_logprobs": []}
            for i, t in enumerate(_GEN_IDS)
        ]
    }
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1795693694,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": lp if logprobs else None,
                "finish_reason": "tool_calls",
                "stop_reason": None,
                "token_ids": _GEN_IDS if inline else None,
                "routed_experts": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": "vllm-bench",
        "usage": {
            "prompt_tokens": 19,
            "total_tokens": 28,
            "completion_tokens": 9,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": list(range(1000, 1019)) if inline else None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }
    return orjson.dumps(body)


def _http(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


RESPONSES = {
    (False, False): _http(_chat_body(False, False)),
    (True, False): _http(_chat_body(True, False)),
    (True, True): _http(_chat_body(True, True)),
}
TOKENIZE = _http(
    orjson.dumps({"count": 19, "max_model_len": 4096, "tokens": list(range(1000, 1019)), "token_strs": None})
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[attr-defined]

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, body = self.url, bytes(self.body)
        self.url, self.body = b"", bytearray()
        if url.endswith(b"/chat/completions"):
            reply = RESPONSES[(b'"logprobs":true' in body, b'"return_token_ids":true' in body)]
        elif url.endswith(b"/tokenize"):
            reply = TOKENIZE
        else:
            reply = HEALTH
        self.transport.write(reply)  # type: ignore[attr-defined]


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="canned vLLM-shaped upstream for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    try:
        uvloop.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
