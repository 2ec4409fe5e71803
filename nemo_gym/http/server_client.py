"""Call other server instances by name, through one pooled aiohttp session per process.

The answer is aiohttp's own `ClientResponse` (`status`, `ok`, `cookies`, `await json()`,
`await read()`), which is what NeMo Gym environments are written against. Going through
aiohttp directly, rather than httpx on an aiohttp transport, removes a whole client layer
from every agent step.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping
from http.cookies import BaseCookie, Morsel
from typing import Any

import aiohttp
import orjson
import yaml
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel

from nemo_gym.exceptions import HeadServerUnreachable, ServerCallError

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents", "environment_servers")
HEAD_SERVER_DEFAULT = {"host": "127.0.0.1", "port": 11000}
# Overrides where ServerClient.load_from_global_config() finds the head server ("host:port").
HEAD_SERVER_ENV_VAR = "NEMO_GYM_HEAD_SERVER"

# Idle connections are dropped before the server side does (our servers keep 30 s), which
# narrows the race of reusing a connection the server is closing at that moment.
KEEPALIVE_SECONDS = 20.0
MAX_CONNECTIONS = 4096

_shared: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None


class ServerResponseError(ServerCallError, aiohttp.ClientResponseError):
    """A non-2xx answer from another server, carrying its body so the cause is visible.

    `response_content` holds the raw body, as NeMo Gym's `raise_for_status` leaves it.
    """

    def __init__(self, response: aiohttp.ClientResponse, content: bytes) -> None:
        super().__init__(
            response.request_info,
            (),
            status=response.status,
            message=response.reason or "",
            headers=response.headers,
        )
        self.response_content = content
        self.status_code = response.status
        self.url = str(response.url)
        self.method = response.method

    def __str__(self) -> str:
        body = self.response_content[:2000].decode(errors="replace")
        return f"{self.method} {self.url} returned {self.status}: {body}"


def message_from_body(content: bytes, limit: int = 1000) -> str:
    """The message of an OpenAI-style error body, else the start of the body text."""
    try:
        message = orjson.loads(content)["error"]["message"]
        if isinstance(message, str):
            return message
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return content[:limit].decode(errors="replace")


async def error_message(response: aiohttp.ClientResponse, limit: int = 1000) -> str:
    return message_from_body(await response.read(), limit)


async def raise_for_status(response: aiohttp.ClientResponse, content: bytes | None = None) -> None:
    """Raise `ServerResponseError` (an `aiohttp.ClientResponseError`) on a non-2xx answer.

    Decided by `response.ok`, as NeMo Gym decides it: environments' tests hand in mocks that
    set only what they read, and a mock's `ok` is truthy while its `status` does not compare."""
    ok = getattr(response, "ok", None)
    if ok is None:
        ok = response.status < 400
    if ok:
        return
    if content is None:
        content = await response.read()
    raise ServerResponseError(response, content)


async def get_response_json(response: aiohttp.ClientResponse) -> Any:
    return orjson.loads(await response.read())


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
    )
    # DummyCookieJar: a shared session must never remember session cookies, or it would
    # merge the sessions of every rollout in the process. Callers pass cookies per call.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


def shared_session() -> aiohttp.ClientSession:
    """The process-wide pooled session (one per event loop: aiohttp sessions are loop-bound)."""
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop or _shared[1].closed:
        _shared = (loop, _new_session())
    return _shared[1]


async def close_shared_client() -> None:
    """Close this process's pooled session (end of a CLI run), so no connection is left dangling."""
    global _shared
    if _shared is not None:
        session = _shared[1]
        _shared = None
        if not session.closed:
            await session.close()


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
    for name, value in global_config.items():
        if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in SERVER_TYPES:
            impls = next(iter(value.values()))
            if isinstance(impls, Mapping) and len(impls) == 1:
                impl = next(iter(impls.values()))
                if isinstance(impl, Mapping) and impl.get("port"):
                    urls[name] = f"http://{impl.get('host') or '127.0.0.1'}:{impl['port']}"
    return urls


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
    ) -> None:
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

    @property
    def global_config_dict(self) -> DictConfig:
        """The running config as OmegaConf, as NeMo Gym environments read it."""
        if self._config_dict is None:
            self._config_dict = OmegaConf.create(self.global_config)
        return self._config_dict

    @classmethod
    def load_from_global_config(cls, head_server_config: Any = None) -> ServerClient:
        """Fetch the running config from the head server (address from env / CLI / env.yaml / defaults)."""
        if head_server_config is None:
            head_server_config = _local_head_server_config()
        elif isinstance(head_server_config, BaseModel):
            head_server_config = head_server_config.model_dump()
        host = head_server_config.get("host") or HEAD_SERVER_DEFAULT["host"]
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
        return f"http://{host}:{port}"

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
        return await self.session.request(method, url, **_prepare(kwargs, json, cookies))

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
    from_env = os.environ.get(HEAD_SERVER_ENV_VAR)
    if from_env:
        host, _, port = from_env.rpartition(":")
        return {"host": host or HEAD_SERVER_DEFAULT["host"], "port": int(port)}
    try:
        from nemo_gym.config import load_config

        loaded = load_config(
            [a for a in sys.argv[1:] if a.startswith("+head_server") or a.startswith("head_server")]
        )
        return dict(loaded.config.head_server)
    except Exception:
        return dict(HEAD_SERVER_DEFAULT)
