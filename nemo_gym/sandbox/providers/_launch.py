"""Child-side launcher for sandbox commands: apply limits to itself, then exec the command.

Run as `python -I -S _launch.py '<json>' argv...` in a fresh session, so nothing but the
standard library loads and no Python code runs in a forked copy of a multithreaded server.
The JSON carries `rlimits` ({"RLIMIT_CPU": [soft, hard], ...}), `cpus` (CPU affinity),
`user` ([uid, gid] to switch to, when started as root) and `parent` (the pid that must still be
alive). A parent-death signal makes the command die with the server that started it; it is armed
after the user switch, which would clear it. Limits are only ever lowered.
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_LAUNCH_FAILED = 125
EXIT_NOT_FOUND = 127


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    if spec.get("user"):
        uid, gid = spec["user"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux; the server still kills the process group itself
    if spec.get("parent") and os.getppid() != spec["parent"]:
        os._exit(EXIT_LAUNCH_FAILED)  # the server died before the signal was armed
    for name, (soft, hard) in (spec.get("rlimits") or {}).items():
        which = getattr(resource, name)
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(soft, hard), hard))
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        sys.stderr.write(f"sandbox: command not found: {argv[0]}\n")
        os._exit(EXIT_NOT_FOUND)
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot run {argv[0]}: {exc}\n")
        os._exit(EXIT_LAUNCH_FAILED)


if __name__ == "__main__":
    main()
