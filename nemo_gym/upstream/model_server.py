"""A model server that answers from a pool of upstreams: the pool's life follows the server's,
and its metrics are served with the server's own."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import PrivateAttr

from nemo_gym.server.base import SimpleServer
from nemo_gym.upstream.config import UpstreamConfig
from nemo_gym.upstream.metrics import PoolCollector
from nemo_gym.upstream.pool import UpstreamPool


class PooledModelServer(SimpleServer):
    """Subclasses say which upstreams (`upstream_config`); tests may set `pool.network` before
    `startup()` to answer them from a `MockTransport`."""

    _pool: UpstreamPool = PrivateAttr()
    _pool_metrics: PoolCollector = PrivateAttr()

    @abstractmethod
    def upstream_config(self) -> UpstreamConfig:
        """The upstreams this server answers from."""

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._pool = UpstreamPool(self.upstream_config())
        self._pool_metrics = PoolCollector(self._pool)

    @property
    def pool(self) -> UpstreamPool:
        return self._pool

    async def startup(self) -> None:
        await self.pool.start()
        self._pool_metrics.attach()

    def metrics_collectors(self) -> list[Any]:
        return [self._pool_metrics]

    async def shutdown(self) -> None:
        await self.pool.aclose()
