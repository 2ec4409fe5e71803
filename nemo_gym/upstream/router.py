"""Which upstream serves which session.

A rollout's calls must hit the same vLLM server (its prefix cache holds the rollout's
history). The table is an LRU bounded by `max_sessions` so memory stays flat over
millions of rollouts; `hash` mode needs no shared state, so several worker processes
route a session identically.
"""

from __future__ import annotations

import zlib


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
        # key: hash(session id) — an int is a third of the memory of a 36-char uuid string; a
        # collision (2^-64) would only make two sessions share an upstream. A plain dict keeps
        # insertion order, so re-inserting on use makes it an LRU without OrderedDict's links.
        self._sessions: dict[int, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def route(self, session_id: str | None) -> int:
        """The upstream for this session, assigning one (and skipping dead ones) if needed."""
        if session_id is None:
            return self._pick(None)
        key = hash(session_id)
        sessions = self._sessions
        index = sessions.pop(key, None)
        if index is None or index in self.down:
            index = self._pick(session_id, after=index)
            if len(sessions) >= self.max_sessions:
                del sessions[next(iter(sessions))]  # least recently used
        sessions[key] = index
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
