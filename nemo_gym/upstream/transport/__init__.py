"""How the upstream pool talks HTTP, shaped like httpcore: the protocol (`base`), the lean
HTTP/1.1 transport (`pool` over `connection`, with `decoding`), aiohttp's (`aiohttp`), and
`mock.MockTransport` for tests, which runs the lean transport over memory instead of sockets."""

from nemo_gym.upstream.transport.base import (
    Answer,
    BodyStream,
    Limits,
    Network,
    StreamAnswer,
    UpstreamTransport,
)
from nemo_gym.upstream.transport.mock import MockRequest, MockResponse, MockTransport
from nemo_gym.upstream.transport.pool import LeanTransport, SocketNetwork

__all__ = [
    "Answer",
    "BodyStream",
    "LeanTransport",
    "Limits",
    "MockRequest",
    "MockResponse",
    "MockTransport",
    "Network",
    "SocketNetwork",
    "StreamAnswer",
    "UpstreamTransport",
]
