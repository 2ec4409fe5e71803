"""The base every server (model, resources, agent) is built on: FastAPI + uvicorn.

A subclass declares a pydantic `config_class` and adds routes in `add_routes`; this class
supplies what every server must behave the same on: `/health`, the signed session cookie,
OpenAI-style errors, secret-scrubbed logging, and startup from `ng_run` or by hand.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from nemo_gym.config import PROJECT_ROOT, ConfigError
from nemo_gym.config.redact import install_scrubber
from nemo_gym.server.body_limit import BodyLimitMiddleware
from nemo_gym.server.context import (
    CONFIG_FILE_VAR,
    INSTANCE_VAR,
    RuntimeContext,
    load_runtime_context,
    write_context_file,
)
from nemo_gym.server.errors import install_error_handlers
from nemo_gym.server.fast_routes import FastHandler, FastRoutes
from nemo_gym.server.http_protocol import PROTOCOL_PATH
from nemo_gym.server.json_io import json_response
from nemo_gym.server.parent_watch import die_with_parent
from nemo_gym.server.sessions import SESSION_ID_KEY, SessionCookieMiddleware, SessionSigner
from nemo_gym.server.worker_app import SERVER_CLASS_VAR

logger = logging.getLogger("nemo_gym.server")
_HEALTH_BODY = b'{"status":"ok"}'


def tune_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Freeze everything loaded at startup out of the GC's sight, and collect less often."""
    gc.collect()
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)


def _as_fastapi_route(handler: FastHandler) -> Any:
    """The same handler behind FastAPI (reached only if the fast layer is bypassed)."""

    async def route(request: Request) -> Response:
        result = await handler(await request.body(), request.scope["session"][SESSION_ID_KEY])
        return json_response(result)

    return route


class BaseServerConfig(BaseModel):
    """Keys every instance may set. Unknown keys are kept (NeMo Gym configs carry extra metadata)."""

    model_config = ConfigDict(extra="allow")

    entrypoint: str = "app.py"
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = False
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    workers: int = Field(default=1, ge=1, le=64)
    # Python's default GC thresholds (700, 10, 10) rescan every in-flight request's objects
    # over and over; at 1,024 in flight that doubled the adapter's CPU per request. None keeps
    # Python's defaults.
    gc_thresholds: tuple[int, int, int] | None = (50_000, 20, 100)


class BaseServer:
    config_class: ClassVar[type[BaseServerConfig]] = BaseServerConfig

    def __init__(self, config: BaseServerConfig, context: RuntimeContext | None = None) -> None:
        self.config = config
        self.context = context
        self.instance_name = context.instance_name if context else type(self).__name__
        self._server_client: Any = None

    # ---- hooks for subclasses -------------------------------------------------------
    def add_routes(self, app: FastAPI) -> None:
        """Register this server's endpoints."""

    def fast_routes(self) -> dict[str, FastHandler]:
        """Hot POST endpoints served without the FastAPI stack: path → (raw body, session id) → result."""
        return {}

    async def startup(self) -> None:
        """Create pooled clients etc. inside the running event loop."""

    async def shutdown(self) -> None:
        """Close what `startup` opened."""

    # ---- shared machinery -----------------------------------------------------------
    @property
    def session_cookie_name(self) -> str:
        return f"{type(self).__name__}___{self.instance_name}"

    @property
    def server_client(self) -> Any:
        """ServerClient for calling other instances by name (built lazily from the local config)."""
        if self._server_client is None:
            from nemo_gym.http.server_client import ServerClient

            if self.context is None:
                raise RuntimeError("this server has no global config; start it with ng_run")
            self._server_client = ServerClient(self.context.global_config)
        return self._server_client

    def setup_webserver(self) -> Any:
        """The ASGI app: hot routes first (if any), then FastAPI."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.startup()
            try:
                yield
            finally:
                await self.shutdown()
                if self._server_client is not None:
                    await self._server_client.aclose()

        app = FastAPI(title=f"{type(self).__name__} ({self.instance_name})", lifespan=lifespan)
        install_error_handlers(app)

        async def health(request: Request) -> Response:
            if request.query_params:
                return await self.detailed_health(request)
            return Response(_HEALTH_BODY, media_type="application/json")

        app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
        app.add_api_route("/", health, methods=["GET"], include_in_schema=False)
        self.add_routes(app)
        secret = self.context.session_secret if self.context else secrets.token_hex(32)
        signer = SessionSigner(self.session_cookie_name, secret)
        app.add_middleware(SessionCookieMiddleware, signer=signer)
        asgi: Any = app
        fast = self.fast_routes()
        if fast:
            for path, handler in fast.items():
                app.add_api_route(
                    path, _as_fastapi_route(handler), methods=["POST"]
                )  # documents them in OpenAPI
            asgi = FastRoutes(app, signer, fast)
        # Outermost, so the one size limit covers the hot routes and the FastAPI ones alike.
        return BodyLimitMiddleware(asgi, max_body_bytes=self.config.max_body_bytes)

    @classmethod
    def from_context(cls, context: RuntimeContext) -> BaseServer:
        server_type, impl_name, impl = context.instance_location()
        key_prefix = f"{context.instance_name}.{server_type}.{impl_name}"
        try:
            config = cls.config_class.model_validate(impl)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(p) for p in error["loc"])
            key = f"{key_prefix}.{loc}" if loc else key_prefix
            raise ConfigError(error["msg"], key=key, source=context.source_of(key)) from None
        server = cls(config, context)
        server.validate_config(key_prefix)
        return server

    async def detailed_health(self, request: Request) -> Response:
        """`/health?...`: servers with dependencies (upstreams) report on them here."""
        return Response(_HEALTH_BODY, media_type="application/json")

    def validate_config(self, key_prefix: str) -> None:
        """Cross-field checks; raise ConfigError naming `key_prefix.<field>`."""

    @classmethod
    def run_webserver(cls) -> None:
        """Entry point of `app.py`: load config, validate, serve until signalled."""
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        die_with_parent()
        entrypoint = Path(inspect.getfile(cls))
        try:
            context = load_runtime_context(entrypoint)
            server = cls.from_context(context)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        install_scrubber(context.secrets)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is hot-path cost
        logging.getLogger().setLevel(server.config.log_level.upper())
        if server.config.workers > 1:
            server.serve_workers(context, entrypoint)
            return
        app = server.setup_webserver()
        server.serve(app)

    def serve_workers(self, context: RuntimeContext, entrypoint: Path) -> None:
        """`workers: N`: uvicorn's supervisor with N processes sharing the listening socket."""
        if not os.environ.get(CONFIG_FILE_VAR):
            os.environ[CONFIG_FILE_VAR] = str(write_context_file(context))
            os.environ[INSTANCE_VAR] = context.instance_name
        module = ".".join(entrypoint.resolve().relative_to(PROJECT_ROOT).with_suffix("").parts)
        os.environ[SERVER_CLASS_VAR] = f"{module}:{type(self).__name__}"
        try:
            uvicorn.run(
                "nemo_gym.server.worker_app:create_app",
                factory=True,
                workers=self.config.workers,
                **self._uvicorn_options(),
            )
        except KeyboardInterrupt:
            pass

    def _uvicorn_options(self) -> dict[str, Any]:
        return {
            "host": self.config.host,
            "port": self.config.port,
            "loop": "uvloop",
            "http": PROTOCOL_PATH,  # uvicorn's httptools protocol, one write per response
            "log_config": None,
            "access_log": self.config.access_log,
            "timeout_graceful_shutdown": 3,
            # Longer than clients keep idle connections (ServerClient: 20 s), so a client rarely
            # reuses a connection we are closing at that moment (uvicorn's default is 5 s).
            "timeout_keep_alive": 30,
            "backlog": 4096,
        }

    def serve(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, **self._uvicorn_options())
        server = uvicorn.Server(config)
        tune_gc(self.config.gc_thresholds)
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises SIGINT after a clean shutdown
            pass
