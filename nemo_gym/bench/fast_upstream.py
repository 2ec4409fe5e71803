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


_LONG = 1000  # tokens in the long generation (requests with "max_tokens":1000)
_WORDS = ("the", " weather", " in", " Paris", " is", " mild", ",", " with", " light", " rain")


def _chat_body(logprobs: bool, inline: bool, long: bool = False) -> bytes:
    """`long`: a 1,000-token reasoning text whose log-prob entries carry `bytes` like real vLLM's."""
    gen_ids = [1000 + i % 5000 for i in range(_LONG)] if long else _GEN_IDS
    words = [_WORDS[i % len(_WORDS)] for i in range(len(gen_ids))] if long else [""] * len(gen_ids)
    think = "".join(words) if long else "The user asks about the weather in Paris. I should call get_weather."
    message = {
        "role": "assistant",
        "content": f"<think>{think}</think>",
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
            {
                "token": f"token_id:{t}",
                "logprob": -0.125 * (i % 9 + 1),
                "bytes": list(w.encode()),
                "top_logprobs": [],
            }
            for i, (t, w) in enumerate(zip(gen_ids, words, strict=True))
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
                "token_ids": gen_ids if inline else None,
                "routed_experts": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": "vllm-bench",
        "usage": {
            "prompt_tokens": 19,
            "total_tokens": 19 + len(gen_ids),
            "completion_tokens": len(gen_ids),
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
    (logprobs, inline, long): _http(_chat_body(logprobs, inline, long))
    for logprobs, inline in ((False, False), (True, False), (True, True))
    for long in (False, True)
}
TOKENIZE = _http(
    orjson.dumps({"count": 19, "max_model_len": 4096, "tokens": list(range(1000, 1019)), "token_strs": None})
)
# A second turn (the request carries the first turn's ids): /tokenize renders the history with the
# tool result, and /chat/completions echoes kv_transfer_params.prompt_token_ids as its prompt ids,
# like vLLM >= 0.32 does; that is what prefix splicing needs.
TURN1_PROMPT = [1666, *range(1000, 1010), 1667, 198, 1666, 750, 198]
TURN1_GEN = [*_GEN_IDS, 1667]
TOKENIZE_TURN2 = _http(
    orjson.dumps(
        {
            "count": 0,
            "max_model_len": 4096,
            "tokens": [
                *TURN1_PROMPT,
                *_GEN_IDS,
                1667,
                198,
                1666,
                486,
                198,
                2000,
                2001,
                1667,
                198,
                1666,
                750,
                198,
            ],
            "token_strs": None,
        }
    )
)

# The adapter's one-time probe of the template's closing tokens (a user and an assistant message,
# finished, then left open with continue_final_message): <|im_end|> and a newline.
_PROBE_OPEN = [1666, 486, 198, 64, 1667, 198, 1666, 750, 198, 65]
TOKENIZE_PROBE_OPEN = _http(orjson.dumps({"count": 10, "max_model_len": 4096, "tokens": _PROBE_OPEN}))
TOKENIZE_PROBE_CLOSED = _http(
    orjson.dumps({"count": 12, "max_model_len": 4096, "tokens": [*_PROBE_OPEN, 1667, 198]})
)


def _echo_prompt(body: bytes, canned: bytes) -> bytes:
    """The canned chat answer with the supplied prompt ids as its `prompt_token_ids`."""
    supplied = orjson.loads(body)["kv_transfer_params"]["prompt_token_ids"]
    answer = orjson.loads(canned.split(b"\r\n\r\n", 1)[1])
    answer["prompt_token_ids"] = supplied
    return _http(orjson.dumps(answer))


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
            reply = RESPONSES[
                (b'"logprobs":true' in body, b'"return_token_ids":true' in body, b'"max_tokens":1000' in body)
            ]
            if b'"kv_transfer_params"' in body:
                reply = _echo_prompt(body, reply)
        elif url.endswith(b"/tokenize"):
            if b'"generation_token_ids"' in body:
                reply = TOKENIZE_TURN2
            elif b'"continue_final_message":true' in body:
                reply = TOKENIZE_PROBE_OPEN
            elif b'"add_generation_prompt":false' in body:
                reply = TOKENIZE_PROBE_CLOSED
            else:
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
