"""Talking to vLLM upstreams: session routing, pooled clients, retries, error mapping."""

from nemo_gym.exceptions import ContextLengthExceeded, UpstreamError
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.pool import Upstream, UpstreamPool
from nemo_gym.upstream.router import SessionRouter

__all__ = [
    "ContextLengthExceeded",
    "SessionRouter",
    "Upstream",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamPool",
]
