"""Call other server instances by name, through one pooled client per process."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import orjson
import yaml
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel

from nemo_gym.http.transport import ClientLimits, make_async_client

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents")
HEAD_SERVER_DEFAULT = {"host": "127.0.0.1", "port": 11000}

_shared: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


class HeadServerUnreachable(RuntimeError):
    pass


class ServerResponseError(RuntimeError):
    """A non-2xx answer from another server, with its body so the cause is visible."""

    def __init__(self, response: httpx.Response) -> None:
        body = response.text[:2000]
        super().__init__(
            f"{response.request.method} {response.request.url} returned {response.status_code}: {body}"
        )
        self.response = response
        self.status_code = response.status_code


def error_message(response: httpx.Response, limit: int = 1000) -> str:
    """The message of an OpenAI-style error body, else the start of the body text."""
    try:
        message = response.json()["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:limit]


def raise_for_status(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ServerResponseError(response)
    return response


def shared_client() -> httpx.AsyncClient:
    """The process-wide pooled client (one per event loop: aiohttp sessions are loop-bound)."""
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop or _shared[1].is_closed:
        _shared = (loop, make_async_client(ClientLimits()))
    return _shared[1]


async def close_shared_client() -> None:
    """Close this process's pooled client (end of a CLI run), so no connection is left dangling."""
    global _shared
    if _shared is not None:
        client = _shared[1]
        _shared = None
        await client.aclose()


def _encode(json: Any) -> bytes:
    if isinstance(json, BaseModel):
        return orjson.dumps(json.model_dump(mode="json", exclude_unset=True))
    return orjson.dumps(json, option=orjson.OPT_NON_STR_KEYS)


class ServerClient:
    def __init__(
        self, global_config: dict[str, Any] | DictConfig, client: httpx.AsyncClient | None = None
    ) -> None:
        if isinstance(global_config, DictConfig):
            global_config = OmegaConf.to_container(global_config, resolve=True)  # type: ignore[assignment]
        self.global_config: dict[str, Any] = global_config  # type: ignore[assignment]
        self._client = client
        self._urls: dict[str, str] = {}
        for name, value in self.global_config.items():
            if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SERVER_TYPES:
                impls = next(iter(value.values()))
                if isinstance(impls, dict) and len(impls) == 1:
                    impl = next(iter(impls.values()))
                    if isinstance(impl, dict) and impl.get("port"):
                        self._urls[name] = f"http://{impl.get('host', '127.0.0.1')}:{impl['port']}"

    @classmethod
    def load_from_global_config(cls, head_server_config: dict[str, Any] | None = None) -> ServerClient:
        """Fetch the running config from the head server (address from env.yaml / CLI / defaults)."""
        if head_server_config is None:
            head_server_config = _local_head_server_config()
        host = head_server_config.get("host", HEAD_SERVER_DEFAULT["host"])
        port = head_server_config.get("port", HEAD_SERVER_DEFAULT["port"])
        url = f"http://{host}:{port}/global_config_dict_yaml"
        try:
            response = httpx.get(url, timeout=10.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise HeadServerUnreachable(
                f"cannot reach the NeMo Gym head server at http://{host}:{port} ({type(exc).__name__}: {exc}); "
                "is ng_run running, and do head_server.host/port match?"
            ) from None
        config = yaml.safe_load(response.text)
        return cls(config)

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client or shared_client()

    def server_names(self) -> list[str]:
        return list(self._urls)

    def url_for(self, server_name: str) -> str:
        try:
            return self._urls[server_name]
        except KeyError:
            known = ", ".join(self._urls) or "none"
            raise KeyError(f"no server instance named {server_name!r} (known: {known})") from None

    async def request(
        self,
        server_name: str,
        method: str,
        url_path: str,
        json: Any = None,
        cookies: Any = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = self.url_for(server_name) + url_path
        if json is not None:
            headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
            kwargs["content"] = _encode(json)
            kwargs["headers"] = headers
        if cookies:
            # Pass cookies as a header: per-request `cookies=` is deprecated in httpx and
            # would otherwise leak into the shared client's jar across rollouts.
            jar = httpx.Cookies(cookies)
            header = "; ".join(f"{c.name}={c.value}" for c in jar.jar)
            kwargs["headers"] = {**kwargs.get("headers", {}), "cookie": header}
        return await self.client.request(method, url, **kwargs)

    async def post(
        self, server_name: str, url_path: str, json: Any = None, cookies: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.request(server_name, "POST", url_path, json=json, cookies=cookies, **kwargs)

    async def get(
        self, server_name: str, url_path: str, cookies: Any = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.request(server_name, "GET", url_path, cookies=cookies, **kwargs)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _local_head_server_config() -> dict[str, Any]:
    try:
        from nemo_gym.config import load_config

        loaded = load_config(
            [a for a in sys.argv[1:] if a.startswith("+head_server") or a.startswith("head_server")]
        )
        return dict(loaded.config.head_server)
    except Exception:
        return dict(HEAD_SERVER_DEFAULT)
