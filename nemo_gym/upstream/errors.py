"""Upstream error answers (read by `nemo_gym.exceptions.parse_error_body`) and the context-length rule."""

from __future__ import annotations

import re
from typing import Any

from nemo_gym.exceptions import ContextLengthExceeded, UpstreamError, parse_error_body

# Every wording vLLM uses for a prompt that does not fit (0.32 and older):
#  - tokens:      "This model's maximum context length is 2048 tokens. However, your prompt contains
#                  [at least ]2049 input tokens, which exceeds this limit ..." (a rendered prompt)
#  - characters:  "... However, your prompt contains 300050 characters (more than 32768 characters,
#                  which is the upper bound for 2048 input tokens) ..." (text too long to tokenize)
#  - requested:   "... However, you requested 2100 tokens (...)" (before 0.10)
#  - ids:         "Input length (2100) exceeds model's maximum context length (2048)." (get_max_tokens:
#                  a prompt given as ids, the spliced path)
#  - engine:      "The decoder prompt (length 2100) is longer than the maximum model length of 2048.",
#                 "The decoder prompt (length 2048) plus the number of requested output tokens (at
#                  least 1) is longer than the maximum model length of 2048." (the engine's own check)
_CONTEXT_LENGTH = re.compile(
    r"maximum context length is \d+ tokens\. However, (?:your prompt contains (?:at least )?\d+ "
    r"(?:input tokens|characters)|you requested \d+ tokens)"
    r"|Input length \(\d+\) exceeds model's maximum context length \(\d+\)"
    r"|The decoder prompt \(length \d+\) (?:plus the number of requested output tokens \(at least 1\) )?"
    r"is longer than the maximum model length of \d+"
)
# A prompt that fills the context exactly leaves no room: vLLM caps max_tokens at 0, then refuses it.
_PROMPT_FILLS_CONTEXT = "max_tokens must be at least 1, got 0"


def is_context_length_error(status: int, message: str, body: dict[str, Any]) -> bool:
    if status != 400:
        return False
    if _CONTEXT_LENGTH.search(message):
        return True
    if _PROMPT_FILLS_CONTEXT not in message:
        return False
    # vLLM says "got 0" also when the caller asked for more: the prompt left no room. Only a
    # caller who asked for at most 0 tokens made the mistake.
    asked = [body.get(k) for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    return not any(isinstance(n, int) and n <= 0 for n in asked)


def upstream_http_error(status: int, content: bytes, body: dict[str, Any]) -> UpstreamError:
    error = parse_error_body(content)
    message = error.message or "upstream returned an empty error body"
    if is_context_length_error(status, message, body):
        return ContextLengthExceeded(status, message, type=error.type, param=error.param, code=error.code)
    etype = error.type
    if isinstance(etype, str) and etype[:1].isupper() and " " not in etype:
        etype = None  # vLLM's Python exception names ("BadRequestError") → our OpenAI-style type
    return UpstreamError(status, message, type=etype, param=error.param, code=error.code)


def lacks_v1(base_url: str) -> bool:
    """vLLM serves the OpenAI routes under /v1; a base_url without it 404s on every call."""
    return not base_url.rstrip("/").endswith("/v1")


def missing_v1_message(url: str) -> str:
    """The 404 a base_url without `/v1` causes, said in the words that fix it."""
    return f"`{url}` returned 404 — does `base_url` end with `/v1`?"
