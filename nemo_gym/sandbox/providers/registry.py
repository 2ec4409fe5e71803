"""Name → provider class, and building a provider from its config block.

Lookup order: classes registered in this process (`register_provider`), then the built-in
providers, then the `nemo_gym.sandbox_providers` entry-point group, so a separate package can
ship a provider that becomes available once installed:

    [project.entry-points."nemo_gym.sandbox_providers"]
    my_provider = "my_pkg.provider:MyProvider"

A provider's config keys are its constructor's keyword arguments; an unknown key fails with the
closest known one, before the provider runs any code.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeAlias

from nemo_gym.sandbox.providers.base import SandboxProvider, did_you_mean

LOGGER = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nemo_gym.sandbox_providers"

ProviderClass: TypeAlias = type[SandboxProvider]

# name -> "module:ClassName", imported on first use so an unused provider costs nothing.
BUILTIN_PROVIDERS: dict[str, str] = {
    "local": "nemo_gym.sandbox.providers.local:LocalProvider",
    "isolated": "nemo_gym.sandbox.providers.isolated:IsolatedProvider",
    "docker": "nemo_gym.sandbox.providers.docker:DockerProvider",
    "apptainer": "nemo_gym.sandbox.providers.apptainer:ApptainerProvider",
    "daytona": "nemo_gym.sandbox.providers.daytona:DaytonaProvider",
    "e2b": "nemo_gym.sandbox.providers.e2b:E2BProvider",
    "ecs_fargate": "nemo_gym.sandbox.providers.ecs_fargate:EcsFargateProvider",
    "enroot": "nemo_gym.sandbox.providers.enroot:EnrootProvider",
    "opensandbox": "nemo_gym.sandbox.providers.opensandbox:OpenSandboxProvider",
    "openshell": "nemo_gym.sandbox.providers.openshell:OpenShellProvider",
}

_REGISTERED: dict[str, ProviderClass] = {}
_ENTRY_POINTS: dict[str, Callable[[], ProviderClass]] | None = None


def _entry_points() -> dict[str, Callable[[], ProviderClass]]:
    """Installed entry points, read once. Two packages claiming one name is an error (the choice
    would be arbitrary); one shadowed by a built-in or registered name is ignored with a warning."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None:
        found: dict[str, Callable[[], ProviderClass]] = {}
        owners: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            owner = getattr(getattr(ep, "dist", None), "name", None) or "an unknown distribution"
            if ep.name in found:
                raise ValueError(
                    f"sandbox provider {ep.name!r} is published by both {owners[ep.name]!r} and {owner!r}; "
                    "uninstall or rename one"
                )
            if ep.name in BUILTIN_PROVIDERS or ep.name in _REGISTERED:
                LOGGER.warning(
                    "ignoring sandbox provider entry point %r from %s: a built-in or registered "
                    "provider has that name",
                    ep.name,
                    owner,
                )
            found[ep.name] = ep.load
            owners[ep.name] = owner
        _ENTRY_POINTS = found
    return _ENTRY_POINTS


def register_provider(name: str, provider_class: ProviderClass, *, override: bool = False) -> None:
    """Make `provider_class` available as `name` in this process."""
    if not name:
        raise ValueError("a sandbox provider name must be a non-empty string")
    if not override and (name in _REGISTERED or name in BUILTIN_PROVIDERS):
        raise ValueError(
            f"sandbox provider {name!r} is already registered (pass override=True to replace it)"
        )
    _REGISTERED[name] = provider_class


def list_providers() -> list[str]:
    return sorted({*_REGISTERED, *BUILTIN_PROVIDERS, *_entry_points()})


def get_provider_class(name: str) -> ProviderClass:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in BUILTIN_PROVIDERS:
        module, _, attribute = BUILTIN_PROVIDERS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    loader = _entry_points().get(name)
    if loader is not None:
        return loader()
    raise ValueError(f"unknown sandbox provider {name!r}{did_you_mean(name, list_providers())}")


def _check_keys(name: str, provider_class: ProviderClass, kwargs: Mapping[str, Any]) -> None:
    """Unknown constructor keys fail here with a did-you-mean, not as a bare TypeError."""
    try:
        parameters = inspect.signature(provider_class).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    known = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    for key in kwargs:
        if key not in known:
            raise ValueError(
                f"{key!r} is not a key of sandbox provider {name!r}{did_you_mean(str(key), known)}"
            )


def create_provider(config: Mapping[str, Any]) -> SandboxProvider:
    """Build a provider from `{provider_name: {its keys}}` (what `resolve_provider_config` returns)."""
    if not isinstance(config, Mapping) or len(config) != 1:
        keys = list(config) if isinstance(config, Mapping) else type(config).__name__
        raise ValueError(f"a sandbox provider config has exactly one key, the provider's name; got {keys!r}")
    name, kwargs = next(iter(config.items()))
    if not isinstance(name, str) or not name:
        raise ValueError("a sandbox provider name must be a non-empty string")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"the config of sandbox provider {name!r} must be a mapping, got {type(kwargs).__name__}"
        )
    provider_class = get_provider_class(name)
    _check_keys(name, provider_class, kwargs)
    return provider_class(**{str(k): v for k, v in kwargs.items()})
