"""The shared names of what went wrong in a rollout, and the stages of an episode.

A failure kind is a short, low-cardinality label (safe as a metric label or a log field) that
producers, collectors and dashboards agree on. It says only what happened: whether to retry,
mask or report is decided per occurrence by whoever holds the failure, not by the name.
An environment that needs a kind of its own writes `<server>:<kind>`. Standard library only,
so data tools can read the vocabulary without any server's requirements.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from pydantic import AfterValidator

logger = logging.getLogger(__name__)

FailureStage = Literal["admission", "seed", "agent", "verification", "cleanup"]

_NAMESPACED_KIND = re.compile(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*")

# The transport between two servers.
TRANSPORT_UNREACHABLE = "transport_unreachable"
TRANSPORT_PEER_DROP = "transport_peer_drop"
TRANSPORT_TIMEOUT = "transport_timeout"
TRANSPORT_LOCAL_RESOURCE = "transport_local_resource"
# The agent's own run.
AGENT_RUN_ERROR = "agent_run_error"
AGENT_REQUEST_FAILED = "agent_request_failed"
AGENT_TIMEOUT = "agent_timeout"
AGENT_COMMAND_NOT_ALLOWED = "agent_command_not_allowed"
# Scoring.
JUDGE_FAILED = "judge_failed"
JUDGE_UNPARSEABLE = "judge_unparseable"
VERIFIER_ERROR = "verifier_error"
# Sandbox and compute providers.
PROVIDER_UNAVAILABLE = "provider_unavailable"
PROVIDER_QUOTA_EXHAUSTED = "provider_quota_exhausted"
PROVIDER_OOM_KILLED = "provider_oom_killed"
# Per-rollout sessions.
SESSION_LOST = "session_lost"
SESSION_EXPIRED = "session_expired"
SESSION_RELEASE_FAILED = "session_release_failed"
# The run around the rollout.
CANCELLED = "cancelled"
KILL_SHAPED = "kill_shaped"
SHUTDOWN = "shutdown"
PERSISTENCE_FAILED = "persistence_failed"
COHORT_INCOMPLETE = "cohort_incomplete"

FAILURE_KINDS: frozenset[str] = frozenset(
    {
        TRANSPORT_UNREACHABLE,
        TRANSPORT_PEER_DROP,
        TRANSPORT_TIMEOUT,
        TRANSPORT_LOCAL_RESOURCE,
        AGENT_RUN_ERROR,
        AGENT_REQUEST_FAILED,
        AGENT_TIMEOUT,
        AGENT_COMMAND_NOT_ALLOWED,
        JUDGE_FAILED,
        JUDGE_UNPARSEABLE,
        VERIFIER_ERROR,
        PROVIDER_UNAVAILABLE,
        PROVIDER_QUOTA_EXHAUSTED,
        PROVIDER_OOM_KILLED,
        SESSION_LOST,
        SESSION_EXPIRED,
        SESSION_RELEASE_FAILED,
        CANCELLED,
        KILL_SHAPED,
        SHUTDOWN,
        PERSISTENCE_FAILED,
        COHORT_INCOMPLETE,
    }
)

_already_warned: set[str] = set()


def is_registered(name: str) -> bool:
    """True for a kind of the shared vocabulary."""
    return name in FAILURE_KINDS


def is_namespaced(name: str) -> bool:
    """True for an environment's own `<server>:<kind>`."""
    return _NAMESPACED_KIND.fullmatch(name) is not None


def validate_failure_kind(name: str | None) -> str | None:
    """`name` unchanged; an unknown, un-namespaced kind is logged once.

    Unknown kinds are kept rather than refused: dropping a failure record over its label would
    hide the failure itself, which is worse than a label outside the vocabulary.
    """
    if name is None or name in FAILURE_KINDS or is_namespaced(name):
        return name
    if name not in _already_warned:
        _already_warned.add(name)
        logger.warning(
            "failure_kind %r is not in nemo_gym.failure_kinds; use a shared kind or '<server>:<kind>' "
            "(this is logged once per name)",
            name,
        )
    return name


# A failure record's kind: any string, an unknown un-namespaced one logged once (see above).
FailureKind = Annotated[str | None, AfterValidator(validate_failure_kind)]


__all__ = [
    "AGENT_COMMAND_NOT_ALLOWED",
    "AGENT_REQUEST_FAILED",
    "AGENT_RUN_ERROR",
    "AGENT_TIMEOUT",
    "CANCELLED",
    "COHORT_INCOMPLETE",
    "FAILURE_KINDS",
    "JUDGE_FAILED",
    "JUDGE_UNPARSEABLE",
    "KILL_SHAPED",
    "PERSISTENCE_FAILED",
    "PROVIDER_OOM_KILLED",
    "PROVIDER_QUOTA_EXHAUSTED",
    "PROVIDER_UNAVAILABLE",
    "SESSION_EXPIRED",
    "SESSION_LOST",
    "SESSION_RELEASE_FAILED",
    "SHUTDOWN",
    "TRANSPORT_LOCAL_RESOURCE",
    "TRANSPORT_PEER_DROP",
    "TRANSPORT_TIMEOUT",
    "TRANSPORT_UNREACHABLE",
    "VERIFIER_ERROR",
    "FailureKind",
    "FailureStage",
    "is_namespaced",
    "is_registered",
    "validate_failure_kind",
]
