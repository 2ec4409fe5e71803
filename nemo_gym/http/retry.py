"""When an HTTP request is worth sending again, for every client nemo_gym has.

The statuses are written once, here. The upstream pool retries only a gateway's "overloaded or
restarting" answers (a generation that may have run is never sent twice); the OpenAI-compatible
client (`nemo_gym.http.openai_client`) also retries rate limits and the statuses NeMo Gym's own
client retries, under the names it exports (`RATE_LIMIT_ERROR_CODES`, `RETRY_ERROR_CODES`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

# A proxy or server in front of the model is overloaded or restarting: nothing ran.
GATEWAY_STATUSES = (502, 503, 504)
# Slow down and try again (with Cloudflare's 520 "unknown error"), in NeMo Gym's order.
RATE_LIMIT_STATUSES = (429, *GATEWAY_STATUSES, 520)
# What NeMo Gym's OpenAI client retries besides: a 404 of a model still loading, a request
# timeout, an internal error.
RETRY_STATUSES = (*RATE_LIMIT_STATUSES, 404, 408, 500)


@dataclass
class RetryPolicy:
    """How a client retries: which statuses, how many times, how long it waits in between;
    and how many retries it made, by reason (a metric reads `counts`)."""

    statuses: frozenset[int]
    max_retries: int
    backoff: float  # seconds before the first retry
    exponential: bool = True  # double the wait per retry, plus up to as much again at random
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("nemo_gym.http"))
    counts: Counter[str] = field(default_factory=Counter)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first)."""
        if not self.exponential:
            return self.backoff
        base = self.backoff * (2 ** (retry - 1))
        return base + random.uniform(0, base)

    def record(
        self, reason: str, what: str, retry: int, detail: object, limit: int | str | None = None
    ) -> None:
        """Count one retry and say why in the log (`what`: the method and URL; `limit`: the most
        retries this kind gets, when it is not `max_retries`)."""
        self.counts[reason] += 1
        self.logger.warning(
            "retrying %s (retry %d of at most %s, reason %s): %s",
            what,
            retry,
            self.max_retries if limit is None else limit,
            reason,
            detail,
        )
