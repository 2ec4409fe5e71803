"""Which upstream serves which session.

A rollout's calls must hit the same vLLM server (its prefix cache holds the rollout's
history). The table is an LRU bounded by `max_sessions` so memory stays flat over
millions of rollouts; `hash` mode needs no shared state, so several worker processes
route a session identically.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict


class SessionRouter:
    def __init__(self, size: int, mode: str = "round_robin", max_sessions: int = 100_000) -> None:
        if size < 1:
            raise ValueError("at least one upstream is required")
        if mode not in ("round_robin", "hash"):
            raise ValueError(f"unknown routing mode {mode!r}; use 'round_robin' or 'hash'")
        self.size = size
        self.mode = mode
        self.max_sessions = max_sessions
        self.down: set[int] = set()
        self._sessions: OrderedDict[str, int] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def route(self, session_id: str | None) -> int:
        """The upstream for this session, assigning one (and skipping dead ones) if needed."""
        if session_id is None:
            return self._pick(None)
        index = self._sessions.get(session_id)
        if index is not None and index not in self.down:
            self._sessions.move_to_end(session_id)
            return index
        index = self._pick(session_id, after=index)
        self._sessions[session_id] = index
        self._sessions.move_to_end(session_id)
        if len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return index

    def _pick(self, session_id: str | None, after: int | None = None) -> int:
        if after is not None:
            start = (after + 1) % self.size  # re-pin off a dead upstream: the next one along
        elif self.mode == "hash" and session_id is not None:
            start = zlib.crc32(session_id.encode()) % self.size
        else:
            start = self._next
            self._next = (self._next + 1) % self.size
        for offset in range(self.size):
            candidate = (start + offset) % self.size
            if candidate not in self.down:
                return candidate
        return start  # everything is down: try anyway, the caller reports the failure
