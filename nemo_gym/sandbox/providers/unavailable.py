"""NeMo Gym 0.7.0's cloud and cluster providers, accepted in config but not run by this build.

Configs that name them parse (their top-level keys are checked, with did-you-mean), and building
the provider — when a server starts — fails with `SandboxProviderUnavailableError` naming what
the backend needs, instead of an import error deep inside a request.
"""

from __future__ import annotations

from typing import Any

from nemo_gym.sandbox.providers.base import SandboxProviderUnavailableError

ALTERNATIVES = (
    "This build accepts its config but does not implement it; use the 'isolated' provider "
    "(Linux namespaces, needs bubblewrap), 'docker' (needs a Docker daemon) or 'local' (no isolation)"
)


def unavailable(name: str, needs: str) -> SandboxProviderUnavailableError:
    return SandboxProviderUnavailableError(f"sandbox provider {name!r} needs {needs}. {ALTERNATIVES}.")


class UnavailableProvider:
    """Base of the placeholders: construction always fails with `needs`."""

    name = "unavailable"
    needs = ""

    def _refuse(self) -> None:
        raise unavailable(self.name, self.needs)


class ApptainerProvider(UnavailableProvider):
    name = "apptainer"
    needs = "the Apptainer runtime (the `apptainer` binary and SIF images, usually on an HPC node)"

    def __init__(
        self, *, exec: Any = None, create: Any = None, probe: Any = None, bin_path: Any = None
    ) -> None:
        self._refuse()


class EnrootProvider(UnavailableProvider):
    name = "enroot"
    needs = "NVIDIA enroot (the `enroot` binary, usually on a Slurm node with pyxis)"

    def __init__(self, *, exec: Any = None, create: Any = None, probe: Any = None) -> None:
        self._refuse()


class E2BProvider(UnavailableProvider):
    name = "e2b"
    needs = "the E2B cloud service (the `e2b` Python SDK and an E2B_API_KEY)"

    def __init__(
        self, *, connection: Any = None, create: Any = None, exec: Any = None, operations: Any = None
    ) -> None:
        self._refuse()


class DaytonaProvider(UnavailableProvider):
    name = "daytona"
    needs = "a Daytona server (the `daytona` Python SDK, DAYTONA_API_KEY and DAYTONA_API_URL)"

    def __init__(
        self,
        *,
        connection: Any = None,
        create: Any = None,
        probe: Any = None,
        operations: Any = None,
        batch: Any = None,
    ) -> None:
        self._refuse()


class OpenSandboxProvider(UnavailableProvider):
    name = "opensandbox"
    needs = "an OpenSandbox server (the `opensandbox` Python SDK and its connection domain and API key)"

    def __init__(
        self,
        *,
        connection: Any = None,
        create: Any = None,
        probe: Any = None,
        operations: Any = None,
        attribution: Any = None,
        networking: Any = None,
        shared_storage: Any = None,
        runtime_requirements: Any = None,
    ) -> None:
        self._refuse()


class OpenShellProvider(UnavailableProvider):
    name = "openshell"
    needs = "an OpenShell gateway (the `openshell` Python package and a reachable gateway endpoint)"

    def __init__(
        self,
        *,
        connection: Any = None,
        create: Any = None,
        exec: Any = None,
        probe: Any = None,
        operations: Any = None,
    ) -> None:
        self._refuse()


class EcsFargateProvider(UnavailableProvider):
    name = "ecs_fargate"
    needs = "AWS ECS Fargate (boto3, AWS credentials, an ECS cluster, subnets and a task execution role)"

    def __init__(self, **config: Any) -> None:
        self._refuse()
