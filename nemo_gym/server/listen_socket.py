"""The listening socket a server is handed by the process that started it.

`ng_run` and `RunHelper` bind each server's port when they choose it and pass the socket down,
so the address in every server's config is held from that moment on. Choosing a port that is
merely free at the time and letting the child bind it later loses a race on a busy machine:
client connections draw local ports from the same numbers, and another run may probe the same
range. A server started by hand (`python app.py`) has no socket handed down and binds itself.
"""

from __future__ import annotations

import os
import socket

LISTEN_FD_VAR = "NEMO_GYM_LISTEN_FD"


def inherited_listener(port: int) -> socket.socket | None:
    """The socket handed down for `port`, or None when the server must bind by itself.

    The variable is consumed so that processes this server starts do not take the socket for
    theirs; a socket on another port than the config says means the two disagree, which is a
    bug worth stopping on rather than serving an address nobody was told about.
    """
    value = os.environ.pop(LISTEN_FD_VAR, None)
    if not value:
        return None
    sock = socket.socket(fileno=int(value))
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    if bound != port:
        sock.close()
        raise RuntimeError(f"the socket handed down by {LISTEN_FD_VAR} listens on port {bound}, not {port}")
    return sock
