"""Turn a server's `sandbox_provider` setting into the `{provider: {keys}}` block
`create_provider` takes.

A server names a top-level block of the merged config (`sandbox_provider: sandbox`); the block
itself comes from a provider config file listed in `config_paths`, so switching provider means
switching that file, not editing the server:

    # nemo_gym/sandbox/providers/isolated/configs/isolated.yaml
    sandbox:
      default_metadata: {sandbox-api: isolated}
      isolated: {default_timeout_s: 180}

The setting may also be the block itself, inline (`sandbox_provider: {local: {}}`). A block
holds exactly one provider key, plus the reserved `default_metadata`: defaults for every
sandbox's `SandboxSpec.metadata` that the server's own metadata overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemo_gym.sandbox.providers.base import did_you_mean

DEFAULT_METADATA_KEY = "default_metadata"
RESERVED_KEYS = frozenset({DEFAULT_METADATA_KEY})


def _plain(value: Any) -> Any:
    """OmegaConf containers become plain Python (interpolations resolved); mappings become dicts."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _provider_keys(block: Mapping[str, Any]) -> list[str]:
    return [key for key in block if key not in RESERVED_KEYS]


def _sandbox_blocks(named_configs: Mapping[str, Any] | None) -> list[str]:
    """Top-level names whose value looks like a provider block (one non-reserved key)."""
    names = []
    for name, value in (named_configs or {}).items():
        value = _plain(value)
        if isinstance(value, Mapping) and len(_provider_keys(value)) == 1:
            names.append(str(name))
    return sorted(names)


def _block(
    sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None
) -> tuple[Any, str]:
    if isinstance(sandbox_provider, str):
        if not sandbox_provider:
            raise ValueError("sandbox_provider must name a sandbox config block; it is empty")
        block = named_configs.get(sandbox_provider) if named_configs is not None else None
        if block is None:
            candidates = _sandbox_blocks(named_configs)
            hint = did_you_mean(sandbox_provider, candidates) if candidates else "; the config defines none"
            raise ValueError(
                f"sandbox_provider {sandbox_provider!r} names no top-level block of the merged config{hint}. "
                f"Add a provider config to config_paths, for example "
                f"nemo_gym/sandbox/providers/local/configs/local.yaml (it defines `sandbox:`)"
            )
        return _plain(block), f"sandbox config {sandbox_provider!r}"
    if isinstance(sandbox_provider, Mapping):
        return _plain(sandbox_provider), "the inline sandbox_provider block"
    raise TypeError(
        "sandbox_provider must be the name of a sandbox config block or a {provider: {...}} mapping, "
        f"not {type(sandbox_provider).__name__}"
    )


def resolve_provider_config(
    sandbox_provider: str | Mapping[str, Any],
    named_configs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`{provider_name: provider_keys}` for `sandbox_provider`, looked up in `named_configs` (the
    merged global config) when it is a name. `default_metadata` is left out (see
    `resolve_provider_metadata`)."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"{source} must be a mapping, got {block!r}")
    keys = _provider_keys(block)
    if len(keys) != 1:
        raise ValueError(
            f"{source} must hold exactly one provider key (besides {DEFAULT_METADATA_KEY}); got {keys!r}"
        )
    return {keys[0]: block[keys[0]]}


def resolve_provider_metadata(
    sandbox_provider: str | Mapping[str, Any],
    named_configs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The block's `default_metadata` ({} when it has none)."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"{source} must be a mapping, got {block!r}")
    metadata = block.get(DEFAULT_METADATA_KEY) or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{DEFAULT_METADATA_KEY} of {source} must be a mapping, got {metadata!r}")
    return dict(metadata)
