"""Token ids and log-probs out of a vLLM chat response (what RL training consumes)."""

from __future__ import annotations

from typing import Any

from nemo_gym.conversion.errors import UpstreamFormatError

_PREFIX = "token_id:"
_PREFIX_LEN = len(_PREFIX)


def generation_tokens(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """(generation token ids, their log-probs) from `logprobs.content` (or inline `token_ids`)."""
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        raise UpstreamFormatError(
            "upstream returned no logprobs although logprobs=true was requested; "
            "is the upstream a vLLM OpenAI-compatible server?"
        )
    try:
        log_probs = [float(entry["logprob"]) for entry in content]
    except (KeyError, TypeError, ValueError):
        raise UpstreamFormatError("upstream logprobs entries lack a numeric 'logprob'") from None
    inline = choice.get("token_ids")
    if inline is not None:
        ids = [int(t) for t in inline]
    else:
        try:
            ids = [
                int(entry["token"][_PREFIX_LEN:]) if entry["token"].startswith(_PREFIX) else _bad(entry)
                for entry in content
            ]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UpstreamFormatError(
                "upstream logprob tokens are not of the form 'token_id:N'; the upstream ignored "
                "return_tokens_as_token_ids (is it vLLM?)"
            ) from None
    if len(ids) != len(log_probs):
        raise UpstreamFormatError(
            f"upstream returned {len(ids)} generation token ids but {len(log_probs)} log-probs; refusing to return "
            "misaligned training data"
        )
    return ids, log_probs


def _bad(entry: dict[str, Any]) -> int:
    raise ValueError(entry)


def prompt_tokens_from(payload: dict[str, Any], source: str) -> list[int]:
    """`tokens` of a /tokenize answer, or `prompt_token_ids` of an inline chat answer."""
    ids = payload.get("tokens" if source == "tokenize" else "prompt_token_ids")
    if not isinstance(ids, list):
        where = (
            "/tokenize returned no 'tokens'"
            if source == "tokenize"
            else "upstream returned no prompt_token_ids (return_token_ids unsupported?)"
        )
        raise UpstreamFormatError(where)
    return ids
