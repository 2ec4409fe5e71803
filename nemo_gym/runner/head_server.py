"""The head server: where any process finds the running config and the instances.

It runs inside `ng_run` (a thread) so it always reflects the supervisor's own view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI
from starlette.responses import JSONResponse, PlainTextResponse, Response

from nemo_gym.config.redact import redact
from nemo_gym.server.errors import install_error_handlers


def build_head_app(global_config: dict[str, Any], instances: Callable[[], list[dict[str, Any]]]) -> FastAPI:
    app = FastAPI(title="NeMo Gym head server")
    install_error_handlers(app)
    redacted_yaml = yaml.safe_dump(redact(global_config), sort_keys=False)

    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    async def global_config_dict_yaml() -> Response:
        return PlainTextResponse(redacted_yaml)

    async def server_instances() -> Response:
        return JSONResponse(instances())

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/global_config_dict_yaml", global_config_dict_yaml, methods=["GET"])
    app.add_api_route("/server_instances", server_instances, methods=["GET"])
    return app


class HeadServerThread:
    """uvicorn in a background thread, stoppable from the supervisor."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, loop="asyncio")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, name="head-server", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("head server failed to start (is the port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError("head server did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
