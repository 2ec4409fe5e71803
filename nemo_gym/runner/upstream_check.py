"""After start-up, ask each model server's upstreams what they serve (`GET {base_url}/models`).

Servers answer `/health` without touching their upstream, so "All N servers ready" can hide a
vLLM that is down or serving another model; the first rollout would then fail minutes later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from nemo_gym.config import ServerInstance

# (base_url key, model key, api key key) per model implementation's config spelling.
_SPELLINGS = (("base_url", "model", "api_key"), ("openai_base_url", "openai_model", "openai_api_key"))


@dataclass
class UpstreamTarget:
    instance: str
    base_url: str
    model: str | None
    api_key: str | None


@dataclass
class UpstreamProblem:
    instance: str
    base_url: str
    reason: str

    def line(self) -> str:
        return f"{self.instance}: upstream {self.base_url} {self.reason}"


def upstream_targets(config: dict[str, Any], instances: list[ServerInstance]) -> list[UpstreamTarget]:
    """Every (model server, upstream URL) pair the config names."""
    targets = []
    for inst in instances:
        if inst.server_type != "responses_api_models":
            continue
        impl = config.get(inst.name, {}).get(inst.server_type, {}).get(inst.impl_name, {})
        for url_key, model_key, key_key in _SPELLINGS:
            urls = impl.get(url_key)
            if not urls:
                continue
            for url in [urls] if isinstance(urls, str) else list(urls):
                targets.append(UpstreamTarget(inst.name, str(url), impl.get(model_key), impl.get(key_key)))
            break
    return targets


def _served_models(body: Any) -> list[str]:
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m.get("id")) for m in data or [] if isinstance(m, dict) and m.get("id")]


def probe(target: UpstreamTarget, client: httpx.Client) -> UpstreamProblem | None:
    """None when the upstream answers /models and lists the configured model."""
    url = target.base_url.rstrip("/") + "/models"
    headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    try:
        response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return UpstreamProblem(
            target.instance, target.base_url, f"is unreachable ({type(exc).__name__}: {exc})"
        )
    if response.status_code != 200:
        hint = " — does `base_url` end with `/v1`?" if response.status_code == 404 else ""
        return UpstreamProblem(
            target.instance, target.base_url, f"answered GET {url} with HTTP {response.status_code}{hint}"
        )
    try:
        served = _served_models(response.json())
    except ValueError:
        return UpstreamProblem(target.instance, target.base_url, f"answered GET {url} with non-JSON")
    if target.model and target.model not in served:
        listing = ", ".join(served) or "nothing"
        return UpstreamProblem(
            target.instance,
            target.base_url,
            f"does not serve the configured model {target.model!r}; it serves: {listing}",
        )
    return None


def check_upstreams(
    config: dict[str, Any], instances: list[ServerInstance], timeout: float = 5.0
) -> list[UpstreamProblem]:
    targets = upstream_targets(config, instances)
    with httpx.Client(timeout=timeout) as client:
        return [p for p in (probe(t, client) for t in targets) if p is not None]
