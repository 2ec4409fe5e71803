"""A pytest plugin for the compat tier's own-tests stage: every host name whose lookup fails during
an environment's tests is appended to the file NG_COMPAT_LOOKUPS names. That record is the evidence
the scope rules need to tell a test that needs the network from one that fails on our code."""

from __future__ import annotations

import os
import socket
from typing import Any

_REAL = socket.getaddrinfo
_SINK = os.environ.get("NG_COMPAT_LOOKUPS")


def _recording_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _REAL(host, *args, **kwargs)
    except socket.gaierror:
        if _SINK:
            name = host.decode() if isinstance(host, bytes) else str(host)
            with open(_SINK, "a", encoding="utf-8") as sink:
                sink.write(name + "\n")
        raise


if _SINK:
    socket.getaddrinfo = _recording_getaddrinfo
