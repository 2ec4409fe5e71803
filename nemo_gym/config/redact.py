"""Secret handling: which keys hold secrets, and scrubbing them from config dumps and logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "passwd")
# "token" only as a whole word at the end (hf_token, auth_token), so `max_tokens`
# and `return_token_id_information` stay readable.
_TOKEN_KEY = re.compile(r"(^|[_\-.])(token|access_token)$", re.IGNORECASE)
_NOT_SECRET_VALUES = {"", "empty", "none", "null", "dummy", REDACTED.lower()}


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS) or bool(_TOKEN_KEY.search(lowered))


def redact(node: Any) -> Any:
    """A copy of a plain config container with every secret-named key's value redacted."""
    if isinstance(node, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v is not None else redact(v)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def secret_values(node: Any) -> set[str]:
    """Every string value stored under a secret-named key (to scrub from log lines)."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, secret or is_secret_key(str(k)))
        elif isinstance(value, list):
            for v in value:
                walk(v, secret)
        elif (
            secret
            and isinstance(value, str)
            and value.strip().lower() not in _NOT_SECRET_VALUES
            and len(value) >= 4
        ):
            found.add(value)

    walk(node, False)
    return found


class SecretScrubber(logging.Filter):
    """Replaces known secret values and bearer tokens in every log record."""

    _BEARER = re.compile(r"(Bearer\s+)[^\s'\"]+", re.IGNORECASE)

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return self._BEARER.sub(r"\1" + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_scrubber(secrets: Iterable[str]) -> SecretScrubber:
    """Attach the scrubber to every handler of the root and uvicorn loggers."""
    scrubber = SecretScrubber(secrets)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "nemo_gym"):
        logger = logging.getLogger(name)
        logger.addFilter(scrubber)
        for handler in logger.handlers:
            handler.addFilter(scrubber)
    return scrubber
