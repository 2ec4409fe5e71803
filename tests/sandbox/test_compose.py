"""AsyncSandboxCompose: a service's command runs in the background, its healthcheck gates
start(), and stop() ends it; what a provider cannot honour is refused before anything starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from nemo_gym.sandbox import AsyncSandboxCompose, SandboxSpec
from tests.sandbox.helpers import token, wait_gone


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_a_service_starts_becomes_healthy_and_stops(tmp_path: Path) -> None:
    mark = token()
    document = {
        "services": {
            "main": {
                "image": "python:3.12-slim",
                "command": ["sh", "-c", f"sleep 0.3; echo ready > ready.txt; exec sleep {mark}"],
                "environment": {"MODE": "test"},
                "healthcheck": {
                    "test": ["CMD-SHELL", "test -f ready.txt"],
                    "interval": "100ms",
                    "retries": 100,
                },
            }
        }
    }
    specs = {"main": SandboxSpec(workdir=str(tmp_path / "svc"))}
    compose = AsyncSandboxCompose(
        {"local": {"workspace_root": str(tmp_path / "boxes")}}, write(tmp_path, document), service_specs=specs
    )
    async with compose:
        main = compose.services["main"]
        assert (await main.exec("cat ready.txt; echo $MODE")).stdout == "ready\ntest\n"
        runtime = f"/tmp/{compose.project}/main"
        assert (
            await main.exec(f"test -f {runtime}/started && test ! -f {runtime}/exit && echo running")
        ).stdout == "running\n"
        descriptor = await compose.serialize()
        assert list(descriptor["services"]) == ["main"]
    assert wait_gone(mark) == []
    assert not await asyncio.to_thread(Path(f"/tmp/{compose.project}").exists)


async def test_an_unhealthy_service_fails_start_and_is_stopped(tmp_path: Path) -> None:
    mark = token()
    document = {
        "services": {
            "main": {
                "image": "x",
                "command": ["sleep", mark],
                "healthcheck": {"test": ["CMD", "false"], "interval": "50ms", "retries": 2, "timeout": "5s"},
            }
        }
    }
    compose = AsyncSandboxCompose({"local": {"workspace_root": str(tmp_path)}}, write(tmp_path, document))
    with pytest.raises(RuntimeError, match="Compose service 'main' is unhealthy"):
        await compose.start()
    assert wait_gone(mark) == []
    assert compose._closed


async def test_several_services_need_a_networking_provider(tmp_path: Path) -> None:
    document = {
        "services": {
            "db": {"image": "x", "command": ["true"]},
            "app": {
                "image": "x",
                "command": ["true"],
                "depends_on": {"db": {"condition": "service_healthy"}},
            },
        }
    }
    compose = AsyncSandboxCompose({"local": {"workspace_root": str(tmp_path)}}, write(tmp_path, document))
    with pytest.raises(
        ValueError, match="several Compose services need a provider that networks sandboxes; 'local' does not"
    ):
        await compose.start()


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"image": "x", "command": ["true"], "build": "."}, r"unsupported fields \['build'\]"),
        ({"command": ["true"]}, "needs a prebuilt `image`"),
        ({"image": "x", "command": ["true"], "restart": "always"}, "restart policies are not supported"),
        (
            {
                "image": "x",
                "command": ["true"],
                "volumes": [{"type": "volume", "source": "v", "target": "/v"}],
            },
            "volumes need a provider with shared storage",
        ),
        (
            {"image": "x", "command": ["true"], "depends_on": {"ghost": {}}},
            "depends on unknown service 'ghost'",
        ),
        ({"image": "x"}, "needs an entrypoint or command"),
        ({"image": "x", "command": ["true"], "healthcheck": {"test": ["CMD"]}}, "invalid healthcheck test"),
    ],
)
async def test_what_cannot_be_honoured_is_refused_first(tmp_path: Path, service: dict, message: str) -> None:
    compose = AsyncSandboxCompose(
        {"local": {"workspace_root": str(tmp_path / "boxes")}},
        write(tmp_path, {"services": {"main": service}}),
    )
    with pytest.raises(ValueError, match=message):
        await compose.start()
    assert compose.services == {}
    assert not (tmp_path / "boxes").exists()  # no sandbox was created
