"""Call other server instances by name, through one pooled aiohttp session per process.

The answer is aiohttp's own `ClientResponse` (`status`, `ok`, `cookies`, `await json()`,
`await read()`), which is what NeMo Gym environments are written against. Going through
aiohttp directly, rather than httpx on an aiohttp transport, removes a whole client layer
from every agent step.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookies import BaseCookie, Morsel
from typing import Any

import aiohttp
import orjson
import yaml
from multidict import CIMultiDict, CIMultiDictProxy
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel
from yarl import URL

from nemo_gym.config.global_keys import GlobalKeys
from nemo_gym.config.instances import advertised_host
from nemo_gym.exceptions import HeadServerUnreachable, ServerCallError, parse_error_body

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents", "environment_servers")
HEAD_SERVER_DEFAULT = {"host": "127.0.0.1", "port": 11000}
# Overrides where ServerClient.load_from_global_config() finds the head server ("host:port").
HEAD_SERVER_ENV_VAR = "NEMO_GYM_HEAD_SERVER"

# Idle connections are dropped before the server side does (our servers keep 30 s), which
# narrows the race of reusing a connection the server is closing at that moment.
KEEPALIVE_SECONDS = 20.0
CONNECT_TIMEOUT_SECONDS = 10.0
_POOL_KEYS = (
    "global_aiohttp_connector_limit",
    "global_aiohttp_connector_limit_per_host",
    "server_call_timeout_seconds",
)


@dataclass(frozen=True)
class PoolSettings:
    """The shared pool's size and patience, from the global keys of the same names."""

    limit: int = GlobalKeys.model_fields["global_aiohttp_connector_limit"].default
    limit_per_host: int = GlobalKeys.model_fields["global_aiohttp_connector_limit_per_host"].default
    read_timeout: float = GlobalKeys.model_fields["server_call_timeout_seconds"].default

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PoolSettings:
        if not any(key in config for key in _POOL_KEYS):
            return cls()
        keys = GlobalKeys.model_validate({k: config[k] for k in _POOL_KEYS if config.get(k) is not None})
        return cls(
            keys.global_aiohttp_connector_limit,
            keys.global_aiohttp_connector_limit_per_host,
            keys.server_call_timeout_seconds,
        )


_settings = PoolSettings()
_shared: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, PoolSettings] | None = None
_retired: list[tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = []


def configure_pool(settings: PoolSettings) -> None:
    """Size this process's pool; a session of the old size is replaced on its next use."""
    global _settings
    _settings = settings


def _request_info(method: str, url: str) -> aiohttp.RequestInfo:
    return aiohttp.RequestInfo(URL(url), method, CIMultiDictProxy(CIMultiDict()), URL(url))


class ServerResponseError(ServerCallError, aiohttp.ClientResponseError):
    """A non-2xx answer from another server, carrying its body so the cause is visible.

    `response_content` holds the raw body, as NeMo Gym's `raise_for_status` leaves it. It pickles
    with its status, URL and body: trainers move it across a Ray actor boundary, where aiohttp's
    own error (whose headers cannot pickle) would arrive without a status.
    """

    def __init__(self, response: aiohttp.ClientResponse | None, content: bytes, **fields: Any) -> None:
        if response is None:
            status, method, url = fields["status"], fields["method"], fields["url"]
            request_info, message = _request_info(method, url), fields.get("message", "")
        else:
            # Environments' tests answer with stand-ins that have a status and a request_info
            # (as aiohttp's own error needs) but not every attribute of a ClientResponse.
            request_info = getattr(response, "request_info", None)
            status = response.status
            method = getattr(response, "method", None) or getattr(request_info, "method", "")
            url = str(getattr(response, "url", None) or getattr(request_info, "url", ""))
            message = getattr(response, "reason", None) or ""
            if request_info is None:
                request_info = _request_info(method, url)
        super().__init__(request_info, (), status=status, message=message)
        self.response_content = content
        self.status_code = status
        self.url = url
        self.method = method

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {"status": self.status, "method": self.method, "url": self.url, "message": self.message}
        return (_rebuild, (type(self), self.response_content, fields))

    def __str__(self) -> str:
        body = self.response_content[:2000].decode(errors="replace")
        return f"{self.method} {self.url} returned {self.status}: {body}"


class ClientResponseError(ServerResponseError):
    """What `raise_for_status` raises. Named as aiohttp's error, which NeMo Gym's raises there:
    environments record `type(error).__name__` in their rows and their tests expect that name."""


def _rebuild(cls: type[ServerResponseError], content: bytes, fields: dict[str, Any]) -> ServerResponseError:
    return cls(None, content, **fields)


class ServerCallTimeout(ServerCallError, aiohttp.SocketTimeoutError):
    """Another server sent no byte for `server_call_timeout_seconds`: the message names the call.

    Still an aiohttp timeout (and a TimeoutError) for code that catches those. It pickles.
    """

    def __init__(self, method: str, url: str, seconds: float) -> None:
        super().__init__(
            f"{method} {url} sent no answer byte for {seconds:g} s "
            "(raise server_call_timeout_seconds if this call is meant to take longer)"
        )
        self.method, self.url, self.seconds = method, url, seconds
        self.status: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.method, self.url, self.seconds))


class ServerUnreachable(ServerCallError, aiohttp.ClientConnectionError):
    """Another server refused or dropped the connection (it may have died). It pickles."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        super().__init__(f"{method} {url} failed: {reason}")
        self.method, self.url, self.reason = method, url, reason
        self.status: int | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.method, self.url, self.reason))


class _NamedResponse(aiohttp.ClientResponse):
    """aiohttp's response, whose read timeout names the call instead of just "timeout"."""

    async def read(self) -> bytes:
        try:
            return await super().read()
        except aiohttp.SocketTimeoutError:
            raise ServerCallTimeout(self.method, str(self.url), _settings.read_timeout) from None


def message_from_body(content: bytes, limit: int = 1000) -> str:
    """The message of an OpenAI-style error body, else the start of the body text."""
    return parse_error_body(content, limit).message


async def raise_for_status(response: aiohttp.ClientResponse, content: bytes | None = None) -> None:
    """Raise `ClientResponseError` (a `ServerResponseError`, and aiohttp's error) on a non-2xx answer.

    Decided by `response.ok`, as NeMo Gym decides it: environments' tests hand in mocks that
    set only what they read, and a mock's `ok` is truthy while its `status` does not compare."""
    ok = getattr(response, "ok", None)
    if ok is None:
        ok = response.status < 400
    if ok:
        return
    if isinstance(response, aiohttp.ClientResponse):
        raise ClientResponseError(response, await response.read() if content is None else content)
    # A stand-in (environments' tests build them) is checked as NeMo Gym checks it: its body
    # from `content.read()`, then its own `raise_for_status()`, whose error is raised as it is
    # (with the body attached, as NeMo Gym attaches it).
    if content is None:
        content = await _stand_in_body(response)
    own_check = getattr(response, "raise_for_status", None)
    if callable(own_check):
        try:
            outcome = own_check()
            if inspect.isawaitable(outcome):
                await outcome
        except aiohttp.ClientResponseError as error:
            error.response_content = content  # type: ignore[attr-defined]
            raise
    raise ClientResponseError(response, content)


async def _stand_in_body(response: Any) -> bytes:
    reader = getattr(getattr(response, "content", None), "read", None)
    body = reader() if callable(reader) else None
    if not inspect.isawaitable(body):
        body = response.read()
    return await body


async def get_response_json(response: aiohttp.ClientResponse) -> Any:
    return orjson.loads(await response.read())


def _new_session(settings: PoolSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.limit,
        limit_per_host=settings.limit_per_host,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ttl_dns_cache=300,
    )
    # DummyCookieJar: a shared session must never remember session cookies, or it would
    # merge the sessions of every rollout in the process. Callers pass cookies per call.
    # No total deadline (a generation or a whole /run may take long), but no call waits for an
    # answer byte longer than server_call_timeout_seconds either.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=settings.read_timeout
        ),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
        response_class=_NamedResponse,
    )


def shared_session() -> aiohttp.ClientSession:
    """The process-wide pooled session (one per event loop: aiohttp sessions are loop-bound)."""
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop or _shared[1].closed or _shared[2] is not _settings:
        if _shared is not None and _shared[0] is loop and not _shared[1].closed:
            _retired.append(_shared[:2])  # resized: calls in flight finish on the old pool
        _shared = (loop, _new_session(_settings), _settings)
    return _shared[1]


async def close_shared_client() -> None:
    """Close this process's pooled session (end of a CLI run), so no connection is left dangling."""
    for _, session in _take_sessions():
        if not session.closed:
            await session.close()


def _take_sessions() -> list[tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]]:
    global _shared
    sessions = [*_retired, *([_shared[:2]] if _shared is not None else [])]
    _shared = None
    _retired.clear()
    return sessions  # type: ignore[return-value]


def close_shared_client_now() -> None:
    """Close this process's pooled sessions from synchronous code, whatever state their loop is in.

    `RunHelper.shutdown()` calls this: a trainer may shut down from another thread, with its loop
    idle, or after closing it, and must not leave open sockets (or aiohttp's unclosed-session
    warnings) behind.
    """
    for loop, session in _take_sessions():
        if session.closed:
            continue
        if loop.is_closed():
            # Nothing can run on that loop any more; mark the pool closed so it is not reported.
            session.connector._close()  # type: ignore[union-attr]
        elif loop.is_running():
            loop.call_soon_threadsafe(lambda s=session, lp=loop: lp.create_task(s.close()))
        else:
            loop.run_until_complete(session.close())


def _cookie_header(cookies: Any) -> str | None:
    """A `Cookie` header from a dict, an aiohttp/`http.cookies` jar of morsels, or pairs."""
    if not cookies:
        return None
    pairs: Iterable[tuple[str, Any]]
    if isinstance(cookies, BaseCookie):
        pairs = ((name, morsel.value) for name, morsel in cookies.items())
    elif isinstance(cookies, Mapping):
        pairs = cookies.items()
    else:
        pairs = cookies
    parts = []
    for name, value in pairs:
        if isinstance(value, Morsel):
            value = value.value
        parts.append(f"{name}={value}")
    return "; ".join(parts) or None


def _encode(json: Any) -> bytes:
    if isinstance(json, BaseModel):
        return orjson.dumps(json.model_dump(mode="json", exclude_unset=True))
    return orjson.dumps(json, option=orjson.OPT_NON_STR_KEYS)


def _prepare(kwargs: dict[str, Any], json: Any, cookies: Any) -> dict[str, Any]:
    headers = kwargs.pop("headers", None)
    headers = dict(headers) if headers else {}
    if json is not None:
        kwargs["data"] = _encode(json)
        headers.setdefault("content-type", "application/json")
    cookie = _cookie_header(cookies)
    if cookie:
        headers["cookie"] = cookie
    if headers:
        kwargs["headers"] = headers
    return kwargs


async def request(
    method: str, url: str, json: Any = None, cookies: Any = None, **kwargs: Any
) -> aiohttp.ClientResponse:
    """One request on the shared session, for URLs outside the running config."""
    return await shared_session().request(method, url, **_prepare(kwargs, json, cookies))


def instance_urls(global_config: Mapping[str, Any]) -> dict[str, str]:
    """`instance name → http://host:port` for every server instance with a port."""
    urls: dict[str, str] = {}
    default_host = global_config.get("default_host")
    for name, value in global_config.items():
        if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in SERVER_TYPES:
            impls = next(iter(value.values()))
            if isinstance(impls, Mapping) and len(impls) == 1:
                impl = next(iter(impls.values()))
                if isinstance(impl, Mapping) and impl.get("port"):
                    host = advertised_host(impl.get("host"), default_host)
                    urls[name] = f"http://{host}:{impl['port']}"
    return urls


class HeadServerAddress(BaseModel):
    """Where the head server listens (NeMo Gym hands out its `BaseServerConfig`; callers read these)."""

    host: str
    port: int


class ServerClient:
    """Addresses server instances by their config name.

    Built as `ServerClient(global_config)` or, as NeMo Gym code does,
    `ServerClient(head_server_config=…, global_config_dict=…)`.
    """

    def __init__(
        self,
        global_config: Mapping[str, Any] | DictConfig | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        global_config_dict: Mapping[str, Any] | DictConfig | None = None,
        head_server_config: Any = None,
        **fields: Any,
    ) -> None:
        self._set_declared_fields(fields)
        config = global_config if global_config is not None else global_config_dict
        if config is None:
            config = {}
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
        self.global_config: dict[str, Any] = dict(config)  # type: ignore[arg-type]
        self.head_server_config = head_server_config
        self._session = session
        self._urls = instance_urls(self.global_config)
        self._config_dict: DictConfig | None = None
        if session is None and any(key in self.global_config for key in _POOL_KEYS):
            configure_pool(PoolSettings.from_config(self.global_config))

    def _set_declared_fields(self, fields: dict[str, Any]) -> None:
        """Keyword values for attributes a subclass declares: NeMo Gym's client is a pydantic
        model, and environments' tests subclass it with fields of their own (`calls: list`)."""
        declared = {name for klass in type(self).__mro__ for name in getattr(klass, "__annotations__", {})}
        unknown = sorted(set(fields) - declared)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments: {', '.join(unknown)}")
        for name, value in fields.items():
            setattr(self, name, value)
        # A mutable class-level default is each instance's own copy, as pydantic makes it: two
        # clients of one test module must not append to one shared `calls` list.
        for name in declared - set(fields):
            default = getattr(type(self), name, None)
            if isinstance(default, (list, dict, set)):
                setattr(self, name, copy.deepcopy(default))

    @classmethod
    def model_construct(cls, **values: Any) -> ServerClient:
        """pydantic's constructor name, which NeMo Gym's tests build a client with."""
        return cls(**values)

    @property
    def global_config_dict(self) -> DictConfig:
        """The running config as OmegaConf, as NeMo Gym environments read it."""
        if self._config_dict is None:
            self._config_dict = OmegaConf.create(self.global_config)
        return self._config_dict

    @classmethod
    def load_head_server_config(cls) -> HeadServerAddress:
        """The head server's address as this process finds it: the environment variable, the
        running config, the command line, else the defaults."""
        return HeadServerAddress.model_validate(_local_head_server_config())

    @classmethod
    def load_from_global_config(cls, head_server_config: Any = None) -> ServerClient:
        """Fetch the running config from the head server (address from env / CLI / env.yaml / defaults)."""
        if head_server_config is None:
            head_server_config = _local_head_server_config()
        elif isinstance(head_server_config, BaseModel):
            head_server_config = head_server_config.model_dump()
        host = advertised_host(head_server_config.get("host") or HEAD_SERVER_DEFAULT["host"])
        port = head_server_config.get("port") or HEAD_SERVER_DEFAULT["port"]
        url = f"http://{host}:{port}/global_config_dict_yaml"
        import httpx  # a blocking one-off at start, before any event loop runs

        try:
            response = httpx.get(url, timeout=10.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise HeadServerUnreachable(
                f"cannot reach the NeMo Gym head server at http://{host}:{port} ({type(exc).__name__}: {exc}); "
                "is ng_run running, and do head_server.host/port match?"
            ) from None
        return cls(yaml.safe_load(response.text), head_server_config=head_server_config)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session or shared_session()

    def server_names(self) -> list[str]:
        return list(self._urls)

    def _build_server_base_url(self, server_config_dict: Any) -> str:
        """`http://host:port` of one instance's block; NeMo Gym agents call this private name
        on blocks from `get_first_server_config_dict`, so it is kept under that name."""
        if isinstance(server_config_dict, Mapping):
            host, port = server_config_dict.get("host"), server_config_dict.get("port")
        else:
            host, port = getattr(server_config_dict, "host", None), getattr(server_config_dict, "port", None)
        # A wildcard is where a server listens, never where to reach it (as `url_for` decides).
        config = getattr(self, "global_config", None)  # NeMo Gym agents' tests call this on a mock
        default_host = config.get("default_host") if isinstance(config, Mapping) else None
        return f"http://{advertised_host(host, default_host)}:{port}"

    def _resolve_base_url(self, server_name: str) -> str:
        """`http://host:port` of an instance (NeMo Gym's private name, which its servers call)."""
        return self.url_for(server_name)

    def url_for(self, server_name: str) -> str:
        try:
            return self._urls[server_name]
        except KeyError:
            known = ", ".join(self._urls) or "none"
            raise KeyError(f"no server instance named {server_name!r} (known: {known})") from None

    async def request(
        self,
        server_name: str,
        url_path: str,
        method: str = "POST",
        json: Any = None,
        cookies: Any = None,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        if method.startswith("/") and not url_path.startswith("/"):
            # The older (server_name, method, url_path) order.
            method, url_path = url_path, method
        url = self.url_for(server_name) + url_path
        try:
            return await self.session.request(method, url, **_prepare(kwargs, json, cookies))
        except aiohttp.SocketTimeoutError:
            raise ServerCallTimeout(method, url, _settings.read_timeout) from None

    async def post(
        self, server_name: str, url_path: str, json: Any = None, cookies: Any = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "POST", json=json, cookies=cookies, **kwargs)

    async def get(
        self, server_name: str, url_path: str, cookies: Any = None, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "GET", cookies=cookies, **kwargs)

    def poll_for_status(self, server_name: str, *, timeout_seconds: float = 5) -> str:
        """One blocking probe of a server (any HTTP answer counts as up): "success",
        "connection_error", "timeout" or "unknown_error", as NeMo Gym's callers expect."""
        import httpx

        try:
            httpx.get(self.url_for(server_name), timeout=timeout_seconds)
            return "success"
        except httpx.ConnectError:
            return "connection_error"
        except httpx.TimeoutException:
            return "timeout"
        except Exception:
            return "unknown_error"

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _local_head_server_config() -> dict[str, Any]:
    """The env var, else the config this process runs with (a RunHelper started here), else the
    command line, else the defaults."""
    from_env = os.environ.get(HEAD_SERVER_ENV_VAR)
    if from_env:
        host, _, port = from_env.rpartition(":")
        return {"host": host or HEAD_SERVER_DEFAULT["host"], "port": int(port)}
    from nemo_gym import global_config

    running = global_config._GLOBAL_CONFIG_DICT
    if running is not None and running.get("head_server"):
        head = running["head_server"]
        return {
            "host": advertised_host(head.get("host"), running.get("default_host")),
            "port": head.get("port"),
        }
    try:
        from nemo_gym.config import load_config

        loaded = load_config(
            [a for a in sys.argv[1:] if a.startswith("+head_server") or a.startswith("head_server")]
        )
        return dict(loaded.config.head_server)
    except Exception:
        return dict(HEAD_SERVER_DEFAULT)
