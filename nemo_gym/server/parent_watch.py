"""Children of ng_run die with it, even if ng_run is SIGKILLed (no orphans, ever)."""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_PID_VAR = "NEMO_GYM_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    parent = os.environ.get(PARENT_PID_VAR)
    if not parent:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() != int(parent):  # parent died before prctl took effect
        os._exit(1)
