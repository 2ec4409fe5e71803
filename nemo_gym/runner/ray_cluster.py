"""The Ray cluster `ng_run` provides to the environments that use Ray (nemo_gym/ray_support.py
says which do)."""

from __future__ import annotations

import logging


class RayCluster:
    """The cluster ng_run uses: joined when an address is configured, else started here
    (as a driver of this process, so it ends when ng_run does)."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.started_here = False

    def ensure(self, configured_address: str | None) -> str:
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "an environment needs Ray but it is not installed; install it with: pip install 'nemo-gym[ray]'"
            ) from None
        if configured_address:
            self.address = configured_address
            return configured_address
        # address="local": always a new cluster, never one some earlier run left registered.
        # Ray listens on the node's IP whatever is asked (it turns 127.0.0.1 into the node IP on
        # purpose), so a run on a machine reachable from its network exposes Ray's ports there.
        ray.init(
            address="local",
            include_dashboard=False,
            ignore_reinit_error=True,
            logging_level=logging.WARNING,
        )
        self.started_here = True
        self.address = ray.get_runtime_context().gcs_address
        return self.address

    def stop(self) -> None:
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False
