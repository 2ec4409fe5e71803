"""Base for environment servers: one typed episode per `/run`, with shared limits and cleanup.

An environment server owns an episode from start to end: it admits it (at most
`max_concurrent_episodes` at once, waiting up to `queue_timeout_seconds`), runs its protocol
under `default_episode_timeout_seconds`, and always unwinds what the episode opened, within
`cleanup_timeout_seconds`, even when the episode fails or the caller goes away. A failure the
protocol expects (`HandledEpisodeError`) and any unexpected error both come back as the
episode's `failure`, so the collector can decide whether to retry; only cancellation
propagates. Every downstream call of an episode runs under its rollout id
(`rollout_context(episode_id.capture_key)`).

A concrete server sets `request_model` / `response_model` and implements `run(request, cleanup)`
and `aggregate_metrics`. Instances are declared under `environment_servers:` in a config and
started by `ng_run` like any other server.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from anyio import CancelScope
from fastapi import Body, FastAPI
from pydantic import PositiveFloat, PositiveInt, PrivateAttr, model_validator

from nemo_gym.config_types import AggregateMetrics, AggregateMetricsRequest
from nemo_gym.episode_types import BaseEpisodeRequest, BaseEpisodeResponse, EpisodeFailure, EpisodeId
from nemo_gym.rollout_correlation import rollout_context
from nemo_gym.server.base import NEMO_GYM_VALIDATION_STATUS, BaseServerConfig, SimpleServer

LOGGER = logging.getLogger(__name__)

EpisodeRequestT = TypeVar("EpisodeRequestT", bound=BaseEpisodeRequest[Any])
EpisodeResponseT = TypeVar("EpisodeResponseT", bound=BaseEpisodeResponse[Any])
CleanupCallback = Callable[[], Awaitable[None]]
# Failure reasons are stored and shown; keep them within EpisodeFailure's limit.
_MAX_REASON = 2000
# NeMo Gym's reasons for the two failures the base class itself decides (collectors match them).
ADMISSION_TIMED_OUT = "Episode admission timed out"
EPISODE_TIMED_OUT = "Episode timed out"


class BaseEnvironmentServerConfig(BaseServerConfig):
    """Episode limits every environment server has."""

    strict_keys: ClassVar[bool] = True

    max_concurrent_episodes: PositiveInt | None = None
    queue_timeout_seconds: PositiveFloat | None = None
    default_episode_timeout_seconds: PositiveFloat | None = None
    cleanup_timeout_seconds: PositiveFloat

    @model_validator(mode="after")
    def _queue_timeout_with_limit(self) -> BaseEnvironmentServerConfig:
        if self.max_concurrent_episodes is not None and self.queue_timeout_seconds is None:
            raise ValueError("queue_timeout_seconds must be set when max_concurrent_episodes is")
        return self


@dataclass
class _CleanupEntry:
    name: str
    callback: CleanupCallback
    active: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def close(self) -> None:
        async with self.lock:
            if self.active:
                await self.callback()
                self.active = False


@dataclass
class CleanupHandle:
    """Closes one registered participant early (at a protocol boundary); later closes do nothing."""

    entry: _CleanupEntry
    timeout_seconds: float

    async def close(self) -> None:
        async with asyncio.timeout(self.timeout_seconds):
            await self.entry.close()


@dataclass
class CleanupContext:
    """The cleanup callbacks of one episode, run last-registered-first when it ends.

    Callbacks must be idempotent (a timed-out remote close may still have happened); a failing
    one is logged and the rest still run, all within one `cleanup_timeout_seconds`. They live in
    this process only: remote owners need their own expiry for a crash.
    """

    episode_id: EpisodeId
    cleanup_timeout_seconds: float
    _cleanups: list[_CleanupEntry] = field(default_factory=list)

    def register_cleanup(self, name: str, callback: CleanupCallback) -> CleanupHandle:
        entry = _CleanupEntry(name=name, callback=callback)
        self._cleanups.append(entry)
        return CleanupHandle(entry, self.cleanup_timeout_seconds)

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(self.cleanup_timeout_seconds):
                for entry in reversed(self._cleanups):
                    try:
                        await entry.close()
                    except Exception:
                        LOGGER.exception(
                            "cleanup %r of episode %s failed", entry.name, self.episode_id.capture_key
                        )
        except TimeoutError:
            LOGGER.error(
                "cleanup of episode %s did not finish within %ss",
                self.episode_id.capture_key,
                self.cleanup_timeout_seconds,
            )


class HandledEpisodeError(Exception):
    """Raise in `run` to end the episode with this failure as its answer."""

    def __init__(self, failure: EpisodeFailure) -> None:
        super().__init__(failure.failure_reason)
        self.failure = failure


class BaseEnvironmentServer(SimpleServer, Generic[EpisodeRequestT, EpisodeResponseT]):
    config: BaseEnvironmentServerConfig
    validation_status: ClassVar[int] = NEMO_GYM_VALIDATION_STATUS
    request_model: ClassVar[type[BaseEpisodeRequest[Any]]]
    response_model: ClassVar[type[BaseEpisodeResponse[Any]]]
    _admission: asyncio.Semaphore | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        limit = self.config.max_concurrent_episodes
        self._admission = asyncio.Semaphore(limit) if limit is not None else None

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()

        async def run_endpoint(body: Any) -> Any:
            return await self.run_request(body)

        run_endpoint.__annotations__["body"] = self.request_model
        run_endpoint.__annotations__["return"] = self.response_model
        app.post("/run", response_model=self.response_model)(run_endpoint)

        async def aggregate_metrics_endpoint(body: AggregateMetricsRequest) -> AggregateMetrics:
            return await self.aggregate_metrics(body)

        app.post("/aggregate_metrics", response_model=AggregateMetrics)(aggregate_metrics_endpoint)
        return app

    async def run_request(self, request: EpisodeRequestT) -> EpisodeResponseT:
        """Admit, run and clean up one episode; every outcome but cancellation is an answer."""
        admitted = False
        if self._admission is not None:
            try:
                await asyncio.wait_for(self._admission.acquire(), timeout=self.config.queue_timeout_seconds)
            except TimeoutError:
                # The reason is NeMo Gym's fixed text (collectors and its tests match it); the limits
                # that caused it go to the log.
                LOGGER.warning(
                    "episode %s not admitted within queue_timeout_seconds=%s (max_concurrent_episodes=%s)",
                    request.episode_id.capture_key,
                    self.config.queue_timeout_seconds,
                    self.config.max_concurrent_episodes,
                )
                return self.failure_response(
                    request,
                    EpisodeFailure(failure_reason=ADMISSION_TIMED_OUT, terminal=False, stage="admission"),
                )
            admitted = True

        cleanup = CleanupContext(request.episode_id, float(self.config.cleanup_timeout_seconds))
        deadline = asyncio.timeout(self.config.default_episode_timeout_seconds)
        cancelled: asyncio.CancelledError | None = None
        response: Any = None
        with rollout_context(request.episode_id.capture_key):
            try:
                try:
                    async with deadline:
                        response = await self.run(request, cleanup)
                except TimeoutError as error:
                    if deadline.expired():
                        LOGGER.warning(
                            "episode %s timed out after default_episode_timeout_seconds=%s",
                            request.episode_id.capture_key,
                            self.config.default_episode_timeout_seconds,
                        )
                        response = self.failure_response(
                            request, EpisodeFailure(failure_reason=EPISODE_TIMED_OUT, terminal=False)
                        )
                    else:
                        response = self._unhandled_failure_response(request, error)
                except HandledEpisodeError as error:
                    response = self.failure_response(request, error.failure)
                except asyncio.CancelledError as error:
                    cancelled = error
                except Exception as error:
                    response = self._unhandled_failure_response(request, error)
            finally:
                try:
                    with CancelScope(shield=True):
                        await cleanup.aclose()
                finally:
                    if admitted and self._admission is not None:
                        self._admission.release()
        if cancelled is not None:
            raise cancelled
        response = self.response_model.model_validate(response)
        self.validate_response_identity(request, response)
        return response  # type: ignore[return-value]

    @abstractmethod
    async def run(self, request: EpisodeRequestT, cleanup: CleanupContext) -> EpisodeResponseT:
        """The environment's protocol for one episode."""

    def _unhandled_failure_response(self, request: EpisodeRequestT, error: Exception) -> EpisodeResponseT:
        LOGGER.exception("episode %s failed unexpectedly", request.episode_id.capture_key)
        reason = f"Unhandled environment server error: {type(error).__name__}: {error}"
        return self.failure_response(
            request, EpisodeFailure(failure_reason=reason[:_MAX_REASON], terminal=True)
        )

    def failure_response(self, request: EpisodeRequestT, failure: EpisodeFailure) -> EpisodeResponseT:
        return self.response_model.model_validate(  # type: ignore[return-value]
            {
                "episode_id": request.episode_id,
                "task_id": request.task.task_id,
                "failure": failure.model_dump(mode="json"),
            }
        )

    @staticmethod
    def validate_response_identity(request: EpisodeRequestT, response: EpisodeResponseT) -> None:
        if response.episode_id != request.episode_id:
            raise ValueError("the episode response names a different episode_id than its request")
        if response.task_id != request.task.task_id:
            raise ValueError("the episode response names a different task_id than its request")

    @abstractmethod
    async def aggregate_metrics(self, body: AggregateMetricsRequest = Body()) -> AggregateMetrics:
        """Task-level metrics over the run's episode results."""


__all__ = [
    "BaseEnvironmentServer",
    "BaseEnvironmentServerConfig",
    "CleanupCallback",
    "CleanupContext",
    "CleanupHandle",
    "HandledEpisodeError",
]
