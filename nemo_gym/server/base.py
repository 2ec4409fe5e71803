"""The base every server (model, resources, agent) is built on: FastAPI + uvicorn.

Servers are pydantic models, as in NeMo Gym: the annotation of `config` names the config
class, the constructor takes `config=` and `server_client=`, and `setup_webserver()` returns
the FastAPI app that subclasses extend. `SimpleServer` supplies what every server must behave
the same on: `/health`, the signed session cookie, OpenAI-style errors, secret-scrubbed
logging, and startup from `ng_run` or by hand.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from starlette.responses import Response

from nemo_gym.config import ConfigError
from nemo_gym.config.redact import install_scrubber
from nemo_gym.config.strict_keys import check_keys
from nemo_gym.http.server_client import close_shared_client
from nemo_gym.ray_support import connect_server, server_needs_ray
from nemo_gym.server import worker_app
from nemo_gym.server.context import RuntimeContext, load_runtime_context
from nemo_gym.server.errors import install_error_handlers
from nemo_gym.server.gc_tuning import tune_gc
from nemo_gym.server.http_protocol import http_protocol_option
from nemo_gym.server.listen_socket import inherited_listener
from nemo_gym.server.metrics import RequestMetrics
from nemo_gym.server.parent_watch import die_with_parent
from nemo_gym.server.request_path import FastHandler, RequestPath
from nemo_gym.server.sessions import SessionCookieMiddleware, SessionSigner
from nemo_gym.server.worker_app import server_class_reference

logger = logging.getLogger("nemo_gym.server")
_HEALTH_BODY = b'{"status":"ok"}'
# Where NeMo Gym's resources servers, agents and environment servers answer a body that fails
# validation (FastAPI's default), which their tests expect.
NEMO_GYM_VALIDATION_STATUS = 422


class ServerApp(FastAPI):
    """The app `SimpleServer.setup_webserver()` builds, the shared behaviour already installed on it."""


class BaseServerConfig(BaseModel):
    """Keys every instance may set. Unknown keys are kept (NeMo Gym configs carry extra metadata)."""

    model_config = ConfigDict(extra="allow")

    entrypoint: str = "app.py"
    host: str = "127.0.0.1"
    port: int = 8000
    # The instance's name in the running config (NeMo Gym: unique at runtime); ng_run fills it.
    name: str = ""
    access_log: bool = False
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024 * 1024
    workers: int = Field(default=1, ge=1, le=64)
    # NeMo Gym's spelling of `workers`; when set it wins.
    num_workers: int | None = Field(default=None, ge=1, le=64)
    # Python's default GC thresholds (700, 10, 10) rescan every in-flight request's objects
    # over and over; at 1,024 in flight that doubled the adapter's CPU per request. None keeps
    # Python's defaults.
    gc_thresholds: tuple[int, int, int] | None = (50_000, 20, 100)

    @model_validator(mode="after")
    def _num_workers_is_workers(self) -> BaseServerConfig:
        # An environment's config may declare a `workers` field of its own meaning (a list, say);
        # only an int here is the process count.
        if self.num_workers is not None and isinstance(self.workers, int):
            self.workers = self.num_workers
        return self

    @property
    def process_count(self) -> int:
        """How many uvicorn processes serve this instance."""
        if isinstance(self.num_workers, int):
            return self.num_workers
        return self.workers if isinstance(self.workers, int) else 1


class BaseServer(BaseModel):
    """A server is a pydantic model: its `config` field's annotation names its config class,
    and subclasses may declare further fields (state, clients) as NeMo Gym servers do."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: BaseServerConfig
    _context: RuntimeContext | None = PrivateAttr(default=None)

    @classmethod
    def config_class(cls) -> type[BaseServerConfig]:
        annotation = cls.model_fields["config"].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise TypeError(f"{cls.__name__}.config must be annotated with a pydantic config class")
        return annotation  # type: ignore[return-value]

    @property
    def context(self) -> RuntimeContext | None:
        # A server made with `model_construct` (as NeMo Gym tests make them) has no private state yet.
        private = self.__pydantic_private__
        return private.get("_context") if private else None

    @property
    def instance_name(self) -> str:
        context = self.context
        if context is not None:
            return context.instance_name
        return getattr(self.config, "name", "") or type(self).__name__


class SimpleServer(BaseServer):
    """Runs as its own process: FastAPI + uvicorn, with what every server must behave the same
    on — `/health`, the signed session cookie, OpenAI-style errors, secret-scrubbed logging,
    and startup from `ng_run` or by hand. Subclasses extend `setup_webserver()`."""

    server_client: Any = None
    # NeMo Gym servers say whether they need Ray; None means "decide from the code".
    ray_enabled: ClassVar[bool | None] = None
    # The status of a request body that fails validation (always with an OpenAI-style body):
    # OpenAI's 400 here and on model servers; NEMO_GYM_VALIDATION_STATUS on the others.
    validation_status: ClassVar[int] = 400

    # ---- hooks for subclasses -------------------------------------------------------
    def fast_routes(self) -> dict[str, FastHandler]:
        """Hot POST endpoints served without the FastAPI stack: path → (raw body, session id) → result."""
        return {}

    async def startup(self) -> None:
        """Create pooled clients etc. inside the running event loop."""

    async def shutdown(self) -> None:
        """Close what `startup` opened."""

    async def detailed_health(self, request: Request) -> Response:
        """`/health?...`: servers with dependencies (upstreams) report on them here."""
        return Response(_HEALTH_BODY, media_type="application/json")

    def metrics_collectors(self) -> list[Any]:
        """Prometheus collectors of this server's own state, read at scrape time (`/metrics`)."""
        return []

    def validate_config(self, key_prefix: str) -> None:
        """Cross-field checks; raise ConfigError naming `key_prefix.<field>`."""

    # ---- shared machinery -----------------------------------------------------------
    def bind_context(self, context: RuntimeContext) -> SimpleServer:
        """Attach the runtime context (instance name, session secret, global config)."""
        self._context = context
        if self.server_client is None:
            from nemo_gym.http.server_client import ServerClient

            self.server_client = ServerClient(context.global_config)
        return self

    def get_session_middleware_key(self) -> str:
        return f"{type(self).__name__}___{self.instance_name}"

    @property
    def session_cookie_name(self) -> str:
        return self.get_session_middleware_key()

    def _signer(self) -> SessionSigner:
        signer = getattr(self, "_signer_cache", None)
        if signer is None:
            context = self.context
            secret = context.session_secret if context else secrets.token_hex(32)
            signer = SessionSigner(self.session_cookie_name, secret)
            object.__setattr__(self, "_signer_cache", signer)
        return signer

    def setup_session_middleware(self, app: FastAPI) -> None:
        """`request.session[SESSION_ID_KEY]` on every request, kept in a signed cookie."""
        # NeMo Gym servers that build their own FastAPI() call this themselves; the app's own
        # middleware list says whether it is already there.
        if not any(m.cls is SessionCookieMiddleware for m in app.user_middleware):
            app.add_middleware(SessionCookieMiddleware, signer=self._signer())

    def setup_liveness(self, app: FastAPI) -> None:
        async def health(request: Request) -> Response:
            if request.query_params:
                return await self.detailed_health(request)
            return Response(_HEALTH_BODY, media_type="application/json")

        app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
        app.add_api_route("/", health, methods=["GET"], include_in_schema=False)

    def _install_lifespan(self, app: FastAPI) -> None:
        """Our startup/shutdown hooks around whatever lifespan the app already has."""
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(application: Any) -> AsyncIterator[Any]:
            await self.startup()
            try:
                async with inner(application) as state:
                    yield state
            finally:
                await self.shutdown()
                await close_shared_client()

        app.router.lifespan_context = lifespan

    def _install_shared(self, app: FastAPI) -> None:
        """What every server's app behaves the same on."""
        install_error_handlers(app, self.validation_status)
        self.setup_session_middleware(app)
        self.setup_liveness(app)
        self._install_lifespan(app)

    def setup_webserver(self) -> FastAPI:
        """The FastAPI app with the shared behaviour installed; subclasses add their routes."""
        app = ServerApp(title=f"{type(self).__name__} ({self.instance_name})")
        self._install_shared(app)
        return app

    def build_asgi(self) -> Any:
        """What uvicorn serves: `setup_webserver()`'s app behind the hot routes."""
        app = self.setup_webserver()
        if not isinstance(app, ServerApp):  # a subclass built its own FastAPI(), as NeMo Gym servers may
            self._install_shared(app)
        metrics = RequestMetrics(self.instance_name, self.metrics_collectors())
        return RequestPath(app, self._signer(), self.fast_routes(), self.config.max_body_bytes, metrics)

    @classmethod
    def from_context(cls, context: RuntimeContext) -> SimpleServer:
        server_type, impl_name, impl = context.instance_location()
        key_prefix = f"{context.instance_name}.{server_type}.{impl_name}"
        config_cls = cls.config_class()
        if getattr(config_cls, "strict_keys", False):
            check_keys(config_cls, impl, key_prefix, context.source_of, what=f"server ({cls.__name__})")
        try:
            config = config_cls.model_validate({**impl, "name": context.instance_name})
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(p) for p in error["loc"])
            key = f"{key_prefix}.{loc}" if loc else key_prefix
            raise ConfigError(error["msg"], key=key, source=context.source_of(key)) from None
        from nemo_gym.http.server_client import ServerClient

        server = cls(config=config, server_client=ServerClient(context.global_config))
        server.bind_context(context)
        server.validate_config(key_prefix)
        return server

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
        if cls.ray_enabled or (cls.ray_enabled is None and server_needs_ray(entrypoint)):
            connect_server(context.global_config)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is hot-path cost
        logging.getLogger().setLevel(server.config.log_level.upper())
        if server.config.process_count > 1:
            server.serve_workers(context, entrypoint)
            return
        server.serve(server.build_asgi())

    def serve_workers(self, context: RuntimeContext, entrypoint: Path) -> None:
        """`workers: N`: uvicorn's supervisor with N processes sharing the listening socket."""
        worker_app.serve_workers(
            context,
            server_class_reference(entrypoint, type(self).__name__),
            self.config.process_count,
            self._uvicorn_options(),
            inherited_listener(self.config.port),
        )

    def _uvicorn_options(self) -> dict[str, Any]:
        return {
            "host": self.config.host,
            "port": self.config.port,
            "loop": "uvloop",
            "http": http_protocol_option(),  # uvicorn's httptools protocol, one write per response
            "log_config": None,
            "access_log": self.config.access_log,
            "timeout_graceful_shutdown": 3,
            # Longer than clients keep idle connections (ServerClient: 20 s), so a client rarely
            # reuses a connection we are closing at that moment (uvicorn's default is 5 s).
            "timeout_keep_alive": 30,
            "backlog": 4096,
            # uvicorn's X-Forwarded-* middleware wraps every request in one more coroutine; these
            # servers are reached directly, so the peer is the caller.
            "proxy_headers": False,
        }

    def serve(self, app: Any) -> None:
        config = uvicorn.Config(app, **self._uvicorn_options())
        server = uvicorn.Server(config)
        listener = inherited_listener(self.config.port)
        tune_gc(self.config.gc_thresholds)
        try:
            server.run(sockets=[listener] if listener is not None else None)
        except KeyboardInterrupt:  # uvicorn re-raises SIGINT after a clean shutdown
            pass
