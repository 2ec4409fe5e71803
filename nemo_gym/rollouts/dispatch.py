"""Send rollouts to their agents' `/run`, admitting them as they are consumed.

`dispatch()` returns an iterator of awaitables, each resolving to `(row, result)` in completion
order: the shape NeMo Gym's `RolloutCollectionHelper.run_examples` gives trainers. With
`max_resident_tasks`, at most that many rollouts are in flight and a new one starts only as a
finished one is taken, so a trainer step of thousands of rows never holds thousands of tasks.

A `/run` that fails raises an exception that pickles with its `.status` (trainers move it across
Ray actor boundaries), or, with `route_failures_to_sidecar`, resolves to a failure row instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from nemo_gym.http.bodies import json_object
from nemo_gym.http.retry import GATEWAY_STATUSES
from nemo_gym.http.server_client import (
    ServerCallTimeout,
    ServerClient,
    ServerResponseError,
    ServerUnreachable,
    message_from_body,
)
from nemo_gym.rollouts.environment_routing import Dispatch, EnvironmentRoutes
from nemo_gym.rollouts.failures import AGENT_REQUEST_FAILED, AGENT_RUN_ERROR, classify
from nemo_gym.rollouts.keys import (
    FAILURE_CLASS_KEY,
    FAILURE_MESSAGE_KEY,
    ROLLOUT_KEY,
    TASK_KEY,
    agent_ref_name,
)

NO_PERSIST_KEY = "_ng_no_persist"
DISPATCH_DRAINED_KEY = "_ng_dispatch_drained"
CANCELLED = "cancelled"
# A gateway answered, not the agent: the rollout may never have run.
_DID_NOT_RUN_STATUSES = frozenset({429, *GATEWAY_STATUSES})
_MAX_BODY_CHARS = 2000

Completion = tuple[dict[str, Any], dict[str, Any]]


@dataclass(frozen=True)
class CompletedRollout:
    """A finished rollout with what the collector needs beyond `(row, result)`: where it went
    (`dispatch`: the agent, or an environment server in front of it) and how long `/run` took."""

    row: dict[str, Any]
    result: dict[str, Any]
    dispatch: Dispatch | None = None
    latency_ms: float | None = None

    @property
    def pair(self) -> Completion:
        return self.row, self.result


class RolloutRunError(ServerResponseError):
    """An agent answered `/run` with an error status. `.status` is that status; it pickles.

    Its text names the agent, the status, the error's own message and which rollout it was.
    """

    def __init__(self, response: Any, content: bytes, **fields: Any) -> None:
        super().__init__(response, content, **fields)
        self.context = str(fields.get("context", ""))

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild, (cls, content, fields) = super().__reduce__()
        return (rebuild, (cls, content, {**fields, "context": self.context}))

    def __str__(self) -> str:
        return f"{self.message}: {message_from_body(self.response_content)} ({self.context})"


class DrainTracker:
    """Recent `/run` durations, to stop starting rollouts that would not finish in the budget."""

    def __init__(self, window: int = 256) -> None:
        self._durations: list[float] = []
        self._window = window
        self.drained = 0

    def record(self, seconds: float) -> None:
        self._durations.append(seconds)
        if len(self._durations) > self._window:
            del self._durations[0]

    def margin(self, configured: float | None) -> float | None:
        """The configured margin, else the 90th percentile of what rollouts took so far."""
        if configured is not None:
            return configured
        if not self._durations:
            return None
        ordered = sorted(self._durations)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


@dataclass(frozen=True)
class DispatchOptions:
    semaphore: asyncio.Semaphore | None = None
    route_failures_to_sidecar: bool = False
    max_resident_tasks: int | None = None
    dispatch_budget_s: float | None = None
    drain_margin_s: float | None = None
    rollout_timeout_s: float | None = None
    tracker: DrainTracker | None = None  # shared across calls to drain by what earlier batches took
    routes: EnvironmentRoutes | None = None  # environment servers in front of agents, when declared

    def __post_init__(self) -> None:
        if self.max_resident_tasks is not None and self.max_resident_tasks < 1:
            raise ValueError("max_resident_tasks must be >= 1")


def failure_row(exc: BaseException, status: int | None) -> dict[str, Any]:
    """The result of a `/run` that produced none: no reward, a class that says whether it ran."""
    ran = status is not None and status not in _DID_NOT_RUN_STATUSES
    failure_class = AGENT_RUN_ERROR if ran else classify(exc)[0]
    if status is not None and not ran:
        failure_class = AGENT_REQUEST_FAILED
    body = getattr(exc, "response_content", None)
    text = body[: _MAX_BODY_CHARS * 4].decode("utf-8", "replace")[:_MAX_BODY_CHARS] if body else None
    return {
        FAILURE_CLASS_KEY: failure_class,
        "_ng_failure_type": type(exc).__name__,
        FAILURE_MESSAGE_KEY: str(exc) or repr(exc),
        "_ng_failure_http_status": status,
        "_ng_failure_response_body": text,
    }


def drained_result(remaining: float, margin: float | None) -> dict[str, Any]:
    """The result of a rollout the dispatch budget never started (nothing ran, nothing to persist)."""
    reason = (
        f"not dispatched: {remaining:.0f}s left in the dispatch budget, below the {margin:.0f}s drain margin"
        if margin is not None
        else "not dispatched: dispatch budget exhausted"
    )
    return {
        FAILURE_CLASS_KEY: CANCELLED,
        NO_PERSIST_KEY: True,
        DISPATCH_DRAINED_KEY: True,
        "error_message": reason,
    }


def _where(row: dict[str, Any]) -> str:
    parts = []
    for key in (TASK_KEY, ROLLOUT_KEY):
        if key in row:
            parts.append(f"{key}={row[key]}")
    if "_rowidx" in row:
        parts.append(f"_rowidx={row['_rowidx']}")
    return ", ".join(parts)


class RunCaller:
    """One `/run` call per rollout, with errors that name the agent, the row and the URL."""

    def __init__(self, client: ServerClient, options: DispatchOptions) -> None:
        self.client = client
        self.options = options
        self.tracker = options.tracker or DrainTracker()
        self._deadline = (
            time.monotonic() + options.dispatch_budget_s if options.dispatch_budget_s is not None else None
        )

    async def __call__(self, row: dict[str, Any]) -> CompletedRollout:
        semaphore = self.options.semaphore
        async with semaphore if semaphore is not None else contextlib.nullcontext():
            if self._deadline is not None:
                remaining = self._deadline - time.monotonic()
                margin = self.tracker.margin(self.options.drain_margin_s)
                if remaining <= 0 or (margin is not None and remaining < margin):
                    self.tracker.drained += 1
                    return CompletedRollout(row, drained_result(remaining, margin))
            started = time.monotonic()
            target = self._target(row)
            try:
                result = await self._run(target, row)
            except (ServerResponseError, ServerCallTimeout, ServerUnreachable) as exc:
                if not self.options.route_failures_to_sidecar:
                    raise
                return CompletedRollout(row, failure_row(exc, getattr(exc, "status", None)), target)
            seconds = time.monotonic() - started
            self.tracker.record(seconds)
            return CompletedRollout(row, result, target, seconds * 1000)

    def _target(self, row: dict[str, Any]) -> Dispatch:
        """The agent, or the environment server that fronts it (or routes the row's taskset)."""
        agent = agent_ref_name(row)
        if self.options.routes is not None and self.options.routes.declared:
            return self.options.routes.dispatch(row, agent)
        if agent is None:
            raise ValueError(f"row has no agent_ref name ({_where(row) or 'no indices'})")
        return Dispatch(server=agent, body=row)

    async def _run(self, target: Dispatch, row: dict[str, Any]) -> dict[str, Any]:
        url = self.client.url_for(target.server) + "/run"
        try:
            if self.options.rollout_timeout_s is not None:
                async with asyncio.timeout(self.options.rollout_timeout_s):
                    return await self._post(target, url, row)
            return await self._post(target, url, row)
        except TimeoutError as exc:
            if isinstance(exc, ServerCallTimeout):
                raise
            raise ServerCallTimeout("POST", url, self.options.rollout_timeout_s or 0.0) from None
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc, ServerCallTimeout | ServerUnreachable):
                raise
            raise ServerUnreachable(
                "POST", url, f"{type(exc).__name__}: {exc} ({target.server!r}; {_where(row)})"
            ) from None

    async def _post(self, target: Dispatch, url: str, row: dict[str, Any]) -> dict[str, Any]:
        agent = target.server
        response = await self.client.post(agent, "/run", json=target.body)
        content = await response.read()
        if response.status >= 400:
            raise RolloutRunError(
                None,
                content,
                status=response.status,
                method="POST",
                url=url,
                message=f"agent {agent!r} /run returned HTTP {response.status}",
                context=f"POST {url}; {_where(row)}",
            )
        result = json_object(content)
        if result is None:
            raise RolloutRunError(
                None,
                content[:_MAX_BODY_CHARS],
                status=502,
                method="POST",
                url=url,
                message=f"agent {agent!r} /run answered something other than a JSON object",
                context=f"POST {url}; {_where(row)}",
            )
        return result


class BoundedCompletions:
    """Awaitables in completion order, with at most `limit` rollouts resident at once.

    Admission starts when the first awaitable is awaited; each finished rollout taken lets the
    next one in. `aclose()` cancels what is still resident (a consumer that stops early).
    """

    def __init__(
        self, calls: Iterator[Awaitable[CompletedRollout]], total: int, limit: int | None, unwrap: bool = True
    ) -> None:
        self._calls = calls
        self._unwrap = unwrap
        self._remaining = total
        self._limit = limit
        self._pending: set[asyncio.Future[CompletedRollout]] = set()
        self._done: list[asyncio.Future[CompletedRollout]] = []
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self.peak_resident = 0

    def __iter__(self) -> BoundedCompletions:
        return self

    def __len__(self) -> int:
        return self._remaining

    def __next__(self) -> Awaitable[Any]:
        if self._remaining <= 0:
            raise StopIteration
        self._remaining -= 1
        return self._next()

    def _fill(self) -> None:
        while not self._closed and (
            self._limit is None or len(self._pending) + len(self._done) < self._limit
        ):
            call = next(self._calls, None)
            if call is None:
                return
            task = asyncio.ensure_future(call)
            # A consumer that stops early abandons what is resident; their errors are not news.
            task.add_done_callback(_mark_retrieved)
            self._pending.add(task)
        self.peak_resident = max(self.peak_resident, len(self._pending) + len(self._done))

    async def _next(self) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._closed:
                raise asyncio.CancelledError
            self._fill()
            if not self._done:
                if not self._pending:
                    raise RuntimeError("no rollout left to wait for")
                done, self._pending = await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
                self._done.extend(done)
            task = self._done.pop()
            self._fill()
        completed = await task
        return completed.pair if self._unwrap else completed

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        resident = [*self._pending, *self._done]
        self._pending.clear()
        self._done.clear()
        for task in resident:
            task.cancel()
        if resident:
            await asyncio.gather(*resident, return_exceptions=True)


def _mark_retrieved(task: asyncio.Future[CompletedRollout]) -> None:
    if not task.cancelled():
        task.exception()


def dispatch(
    rows: Sequence[dict[str, Any]], client: ServerClient, options: DispatchOptions, *, unwrap: bool = True
) -> BoundedCompletions:
    """The rollouts of `rows`, started in the order given once the first result is awaited; each
    awaitable gives `(row, result)`, or the whole `CompletedRollout` without `unwrap`."""
    caller = RunCaller(client, options)
    return BoundedCompletions(iter(map(caller, rows)), len(rows), options.max_resident_tasks, unwrap)


async def completions(
    rows: Sequence[dict[str, Any]], client: ServerClient, options: DispatchOptions
) -> AsyncIterator[Completion]:
    """`(row, result)` as each rollout finishes; leaving early cancels the ones still running."""
    pending = dispatch(rows, client, options)
    try:
        for awaitable in pending:
            yield await awaitable
    finally:
        await pending.aclose()
