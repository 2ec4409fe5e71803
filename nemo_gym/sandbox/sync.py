"""Run coroutines for synchronous callers on a private event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")

# Upper bound on one blocking call; sandbox commands carry their own, shorter, timeouts.
DEFAULT_WAIT_S = 3600.0
CLOSE_WAIT_S = 5.0


class LoopThread:
    """An event loop running in its own thread. Blocking on it from inside another running
    event loop would stall that loop, so that is refused."""

    def __init__(self, *, wait_s: float = DEFAULT_WAIT_S, close_wait_s: float = CLOSE_WAIT_S) -> None:
        self._wait_s = wait_s
        self._close_wait_s = close_wait_s
        self._loop = asyncio.new_event_loop()
        self._closed = False
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="nemo-gym-sandbox-loop", daemon=True)
        self._thread.start()
        ready.wait()

    def _check(self, operation: str) -> None:
        if self._closed or self._loop.is_closed():
            raise RuntimeError("the sandbox's event loop is closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(f"Sandbox.{operation}() blocks; inside async code use AsyncSandbox")

    def _result(self, operation: str, future: Future[T]) -> T:
        try:
            return future.result(timeout=self._wait_s)
        except FutureTimeout as exc:
            future.cancel()
            raise TimeoutError(f"Sandbox.{operation}() did not finish within {self._wait_s:g}s") from exc

    def call(self, operation: str, func: Callable[[], T]) -> T:
        """Run a plain callable on the loop thread (for objects that must be built there)."""
        self._check(operation)
        future: Future[T] = Future()

        def invoke() -> None:
            try:
                future.set_result(func())
            except BaseException as exc:  # delivered to the waiting caller
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(invoke)
        return self._result(operation, future)

    def run(self, operation: str, factory: Callable[[], Awaitable[T]]) -> T:
        self._check(operation)

        async def wrapper() -> T:
            return await factory()

        return self._result(operation, asyncio.run_coroutine_threadsafe(wrapper(), self._loop))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=self._close_wait_s)
            if not self._thread.is_alive():
                self._loop.close()
