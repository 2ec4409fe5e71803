"""Talking to vLLM upstreams: session routing, pooled clients, retries, error mapping."""

from nemo_gym.upstream.errors import ContextLengthExceeded, UpstreamError
from nemo_gym.upstream.pool import Upstream, UpstreamPool, UpstreamSettings
from nemo_gym.upstream.router import SessionRouter

__all__ = [
    "ContextLengthExceeded",
    "SessionRouter",
    "Upstream",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamSettings",
]
