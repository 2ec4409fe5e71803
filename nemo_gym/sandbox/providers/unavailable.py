"""NeMo Gym 0.7.0's cloud and cluster providers, accepted in config but not run by this build.

Configs that name them parse (their top-level keys are checked, with did-you-mean), and building
the provider — when a server starts — fails with `SandboxProviderUnavailableError` naming what
the backend needs, instead of an import error deep inside a request.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from nemo_gym.sandbox.providers.base import SandboxProviderUnavailableError

ALTERNATIVES = (
    "This build accepts its config but does not implement it; use the 'isolated' provider "
    "(Linux namespaces, needs bubblewrap), 'docker' (needs a Docker daemon) or 'local' (no isolation)"
)


def unavailable(name: str, needs: str) -> SandboxProviderUnavailableError:
    return SandboxProviderUnavailableError(f"sandbox provider {name!r} needs {needs}. {ALTERNATIVES}.")


class UnavailableProvider:
    """Base of the placeholders: construction always fails with `needs`.

    `keys` are the config keys NeMo Gym's provider takes (None: any); they become the class's
    signature, which is what the registry checks a config against before construction.
    """

    name = "unavailable"
    needs = ""
    keys: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.keys is not None:
            cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None) for key in cls.keys]
            )

    def __init__(self, **config: Any) -> None:
        raise unavailable(self.name, self.needs)


class ApptainerProvider(UnavailableProvider):
    name = "apptainer"
    needs = "the Apptainer runtime (the `apptainer` binary and SIF images, usually on an HPC node)"
    keys = ("exec", "create", "probe", "bin_path")


class EnrootProvider(UnavailableProvider):
    name = "enroot"
    needs = "NVIDIA enroot (the `enroot` binary, usually on a Slurm node with pyxis)"
    keys = ("exec", "create", "probe")


class E2BProvider(UnavailableProvider):
    name = "e2b"
    needs = "the E2B cloud service (the `e2b` Python SDK and an E2B_API_KEY)"
    keys = ("connection", "create", "exec", "operations")


class DaytonaProvider(UnavailableProvider):
    name = "daytona"
    needs = "a Daytona server (the `daytona` Python SDK, DAYTONA_API_KEY and DAYTONA_API_URL)"
    keys = ("connection", "create", "probe", "operations", "batch")


class OpenSandboxProvider(UnavailableProvider):
    name = "opensandbox"
    needs = "an OpenSandbox server (the `opensandbox` Python SDK and its connection domain and API key)"
    keys = (
        "connection",
        "create",
        "probe",
        "operations",
        "attribution",
        "networking",
        "shared_storage",
        "runtime_requirements",
    )


class OpenShellProvider(UnavailableProvider):
    name = "openshell"
    needs = "an OpenShell gateway (the `openshell` Python package and a reachable gateway endpoint)"
    keys = ("connection", "create", "exec", "probe", "operations")


class EcsFargateProvider(UnavailableProvider):
    name = "ecs_fargate"
    needs = "AWS ECS Fargate (boto3, AWS credentials, an ECS cluster, subnets and a task execution role)"
