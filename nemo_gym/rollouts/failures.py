"""Failure classes and the end-of-run summary: a user with 300 failures wants the top reasons, not a log."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from nemo_gym.exceptions import NemoGymError

INVALID_INPUT_ROW = "invalid_input_row"
AGENT_REQUEST_FAILED = "agent_request_failed"
AGENT_RUN_ERROR = "agent_run_error"
TRANSPORT_UNREACHABLE = "transport_unreachable"
TRANSPORT_TIMEOUT = "transport_timeout"
TRANSPORT_PEER_DROP = "transport_peer_drop"
NO_AGENT = "no_agent"


class RolloutFailure(NemoGymError):
    """A rollout that failed for a reason we can name; `failure_class` goes into the sidecar row."""

    def __init__(self, failure_class: str, message: str) -> None:
        super().__init__(message)
        self.failure_class = failure_class


def classify(exc: BaseException) -> tuple[str, str]:
    """(failure class, one-line message) for any exception a rollout raised."""
    if isinstance(exc, RolloutFailure):
        return exc.failure_class, str(exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TRANSPORT_TIMEOUT, text
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TRANSPORT_UNREACHABLE, text
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return TRANSPORT_PEER_DROP, text
    return AGENT_RUN_ERROR, text


@dataclass
class FailureTally:
    """Counts per failure class, each with the first message seen as its example."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, failure_class: str, message: str) -> None:
        self.counts[failure_class] += 1
        self.examples.setdefault(failure_class, message)

    def summary(self, attempted: int, top: int = 5) -> str:
        """Most common reasons first, with a count and one example message each."""
        if not self.total:
            return f"No failures ({attempted} rollouts attempted)."
        lines = [f"{self.total} of {attempted} rollouts failed. Most common reasons:"]
        for failure_class, count in self.counts.most_common(top):
            example = self.examples[failure_class]
            if len(example) > 300:
                example = example[:300] + "…"
            lines.append(f"  {count} × {failure_class}, e.g.: {example}")
        rest = len(self.counts) - top
        if rest > 0:
            lines.append(f"  … and {rest} more failure classes")
        return "\n".join(lines)
