"""NeMo Gym 0.7.0's cloud and cluster providers, accepted in config but not run by this build.

Configs that name them parse (their top-level keys are checked, with did-you-mean), and building
the provider — when a server starts — fails with `SandboxProviderUnavailableError` naming what
the backend needs, instead of an import error deep inside a request.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, NamedTuple

from nemo_gym.sandbox.providers.base import SandboxProviderUnavailableError

ALTERNATIVES = (
    "This build accepts its config but does not implement it; use the 'isolated' provider "
    "(Linux namespaces, needs bubblewrap), 'docker' (needs a Docker daemon) or 'local' (no isolation)"
)


def unavailable(name: str, needs: str) -> SandboxProviderUnavailableError:
    return SandboxProviderUnavailableError(f"sandbox provider {name!r} needs {needs}. {ALTERNATIVES}.")


class Backend(NamedTuple):
    """A placeholder's backend: what it needs to run, and NeMo Gym's config keys for it (None: any)."""

    needs: str
    keys: tuple[str, ...] | None = None


# The placeholder backends by provider name.
BACKENDS: dict[str, Backend] = {
    "apptainer": Backend(
        "the Apptainer runtime (the `apptainer` binary and SIF images, usually on an HPC node)",
        ("exec", "create", "probe", "bin_path"),
    ),
    "enroot": Backend(
        "NVIDIA enroot (the `enroot` binary, usually on a Slurm node with pyxis)", ("exec", "create", "probe")
    ),
    "e2b": Backend(
        "the E2B cloud service (the `e2b` Python SDK and an E2B_API_KEY)",
        ("connection", "create", "exec", "operations"),
    ),
    "daytona": Backend(
        "a Daytona server (the `daytona` Python SDK, DAYTONA_API_KEY and DAYTONA_API_URL)",
        ("connection", "create", "probe", "operations", "batch"),
    ),
    "opensandbox": Backend(
        "an OpenSandbox server (the `opensandbox` Python SDK and its connection domain and API key)",
        (
            "connection",
            "create",
            "probe",
            "operations",
            "attribution",
            "networking",
            "shared_storage",
            "runtime_requirements",
        ),
    ),
    "openshell": Backend(
        "an OpenShell gateway (the `openshell` Python package and a reachable gateway endpoint)",
        ("connection", "create", "exec", "probe", "operations"),
    ),
    "ecs_fargate": Backend(
        "AWS ECS Fargate (boto3, AWS credentials, an ECS cluster, subnets and a task execution role)"
    ),
}


class UnavailableProvider:
    """Base of the placeholders: construction always fails naming what the backend needs.

    A subclass names its backend (`backend=`); the backend's `keys` become the class's signature,
    which is what the registry checks a config against before construction.
    """

    name = "unavailable"
    needs = ""
    keys: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, backend: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if backend is not None:
            cls.name = backend
            cls.needs, cls.keys = BACKENDS[backend]
        if cls.keys is not None:
            cls.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None) for key in cls.keys]
            )

    def __init__(self, **config: Any) -> None:
        raise unavailable(self.name, self.needs)


class ApptainerProvider(UnavailableProvider, backend="apptainer"): ...


class EnrootProvider(UnavailableProvider, backend="enroot"): ...


class E2BProvider(UnavailableProvider, backend="e2b"): ...


class DaytonaProvider(UnavailableProvider, backend="daytona"): ...


class OpenSandboxProvider(UnavailableProvider, backend="opensandbox"): ...


class OpenShellProvider(UnavailableProvider, backend="openshell"): ...


class EcsFargateProvider(UnavailableProvider, backend="ecs_fargate"): ...
