"""The `manifest.yaml` of an environment (or benchmark) bundle, as a validated pydantic model.

A bundle is a folder `environments/<name>/` (or `benchmarks/<name>/`) holding the servers to
start (`config.yaml`, named by the manifest's `config_path`) and the manifest: what the
environment is, who wrote it, its reward range, how its agent loop is integrated, and its
datasets. The config loader validates a bundle's manifest whenever it loads the bundle's
config, so a bad manifest fails at start with the key and the file at fault.
"""

from __future__ import annotations

import difflib
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from nemo_gym.config.errors import ConfigError
from nemo_gym.config_types import Domain

MANIFEST_FILENAME = "manifest.yaml"
_NOT_SPDX = frozenset({"internal", "proprietary", "unknown"})
_SOURCE = r"^(?:(?:https?|ssh|git|file)://\S+|[^@\s]+@[^:\s]+:\S+)$"
_CALLABLE = r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Source = Annotated[str, StringConstraints(strip_whitespace=True, pattern=_SOURCE)]
GitRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, pattern=r"^\S+$")]
PythonCallable = Annotated[str, StringConstraints(strip_whitespace=True, pattern=_CALLABLE)]


# The manifest's closed vocabularies; each value is the spelling manifests use.
EnvironmentKind = StrEnum("EnvironmentKind", [("ENVIRONMENT", "environment"), ("BENCHMARK", "benchmark")])
IntegrationProfile = StrEnum(
    "IntegrationProfile",
    [
        ("CUSTOM_GYM_VERIFIER", "custom-gym-verifier"),
        ("CUSTOM_GYM_AGENT_LOOP", "custom-gym-agent-loop"),
        ("EXTERNAL_AGENT_LOOP", "external-agent-loop"),
        ("EXTERNAL_ROLLOUT_DRIVER", "external-rollout-driver"),
    ],
)
Determinism = StrEnum(
    "Determinism", [("SEEDED", "seeded"), ("STOCHASTIC", "stochastic"), ("UNKNOWN", "unknown")]
)
SessionModel = StrEnum("SessionModel", [("EPISODE", "episode"), ("STEP", "step")])
EnvironmentState = StrEnum("EnvironmentState", [("NONE", "none"), ("PER_SESSION", "per_session")])
Lifecycle = StrEnum("Lifecycle", [("ACTIVE", "active"), ("DEPRECATED", "deprecated")])
DatasetKind = StrEnum(
    "DatasetKind",
    [("TRAIN", "train"), ("VALIDATION", "validation"), ("EXAMPLE", "example"), ("BENCHMARK", "benchmark")],
)
PromptSource = StrEnum(
    "PromptSource", [("TEMPLATE", "template"), ("PREPARED", "prepared"), ("AGENT", "agent")]
)

# What each integration profile must name.
_REQUIRED_BY_PROFILE: dict[IntegrationProfile, tuple[str, ...]] = {
    IntegrationProfile.CUSTOM_GYM_VERIFIER: ("model_server", "resources_server"),
    IntegrationProfile.CUSTOM_GYM_AGENT_LOOP: ("model_server",),
    IntegrationProfile.EXTERNAL_AGENT_LOOP: (),
    IntegrationProfile.EXTERNAL_ROLLOUT_DRIVER: ("rollout_driver",),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_default=True)


class Reward(_Strict):
    range: tuple[FiniteFloat, FiniteFloat]
    higher_is_better: bool

    @model_validator(mode="after")
    def _ordered(self) -> Reward:
        if self.range[0] > self.range[1]:
            raise ValueError("reward.range must be [lower, upper] with lower <= upper")
        return self


class ManifestDataset(_Strict):
    name: NonEmpty
    type: DatasetKind
    jsonl_fpath: NonEmpty
    prepare_script: NonEmpty | None = None
    prompt_config: NonEmpty | None = None
    num_repeats: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _benchmark_is_prepared(self) -> ManifestDataset:
        if self.type == DatasetKind.BENCHMARK and self.prepare_script is None:
            raise ValueError("a benchmark dataset needs prepare_script")
        return self


class AdoptedFrom(_Strict):
    source: Source
    ref: GitRef
    reconciled: date


class EnvironmentManifest(_Strict):
    """Authored metadata of a bundle, and the parts of its composition the catalog shows."""

    name: NonEmpty
    version: NonEmpty
    # Set by hand; false is not a certificate of validation.
    experimental: bool = True
    kind: EnvironmentKind
    integration_profile: IntegrationProfile
    domain: Domain
    description: NonEmpty
    modality: NonEmpty
    # An SPDX expression, or internal / proprietary / unknown.
    licensing: NonEmpty = "unknown"
    authors: list[NonEmpty] = Field(min_length=1)
    reward: Reward
    determinism: Determinism = Determinism.UNKNOWN
    # The bundle's config, relative to the manifest.
    config_path: NonEmpty = "config.yaml"
    # What the bundle composes.
    resources_server: NonEmpty | None
    agent_server: NonEmpty
    model_server: NonEmpty | None = None
    rollout_driver: PythonCallable | None = None
    sandbox: NonEmpty | None = None
    # Its data.
    datasets: list[ManifestDataset] = Field(min_length=1)
    dataset_owner: NonEmpty | None = None
    canonical_split: NonEmpty | None = None
    # How it runs and grades.
    grading_mode: NonEmpty | None = None
    session_model: SessionModel | None = None
    state: EnvironmentState | None = None
    prompt_source: PromptSource = PromptSource.TEMPLATE
    standard_prompt_config: NonEmpty | None = None
    adopted_from: AdoptedFrom | None = None
    lifecycle: Lifecycle = Lifecycle.ACTIVE

    @field_validator("authors")
    @classmethod
    def _unique_authors(cls, authors: list[str]) -> list[str]:
        if len(authors) != len(set(authors)):
            raise ValueError("authors must not repeat")
        return authors

    @field_validator("licensing")
    @classmethod
    def _license(cls, value: str) -> str:
        if value in _NOT_SPDX:
            return value
        try:
            return canonicalize_license_expression(value)
        except InvalidLicenseExpression:
            raise ValueError(
                "licensing must be an SPDX license expression, internal, proprietary or unknown"
            ) from None

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentManifest:
        missing = [
            name for name in _REQUIRED_BY_PROFILE[self.integration_profile] if getattr(self, name) is None
        ]
        if self.kind == EnvironmentKind.BENCHMARK:
            if self.canonical_split is None:
                missing.append("canonical_split")
            if self.prompt_source == PromptSource.TEMPLATE and self.standard_prompt_config is None:
                missing.append("standard_prompt_config")
        if missing:
            raise ValueError(
                f"a {self.kind.value} manifest with integration_profile {self.integration_profile.value} needs: "
                + ", ".join(dict.fromkeys(missing))
            )
        if self.prompt_source == PromptSource.PREPARED and self.standard_prompt_config is not None:
            raise ValueError("standard_prompt_config cannot be set when prompt_source is prepared")
        if self.prompt_source != PromptSource.TEMPLATE and any(
            d.prompt_config is not None for d in self.datasets
        ):
            raise ValueError("a dataset's prompt_config needs prompt_source: template")
        if (
            self.integration_profile != IntegrationProfile.EXTERNAL_ROLLOUT_DRIVER
            and self.rollout_driver is not None
        ):
            raise ValueError("rollout_driver belongs only to the external-rollout-driver profile")
        names = [dataset.name for dataset in self.datasets]
        if len(names) != len(set(names)):
            raise ValueError("dataset names must not repeat")
        if self.kind == EnvironmentKind.BENCHMARK and not any(
            d.type == DatasetKind.BENCHMARK for d in self.datasets
        ):
            raise ValueError("a benchmark manifest needs a dataset of type benchmark")
        return self


class ManifestError(ConfigError):
    """A manifest that cannot be read, parsed or validated (the message names key and file)."""


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(parts)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """The closest field the model at `loc` has, as a hint for a misspelt key."""
    model: Any = EnvironmentManifest
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        model = next(
            (
                a
                for a in (annotation, *getattr(annotation, "__args__", ()))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if model is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), sorted(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def load_manifest(path: str | Path) -> EnvironmentManifest:
    """The validated manifest at `path`; any problem is a `ManifestError` naming the key and file."""
    manifest_path = Path(path)
    source = str(manifest_path)
    try:
        data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"environment manifest {manifest_path} does not exist") from None
    except (OSError, UnicodeError) as error:
        raise ManifestError(f"cannot read environment manifest: {error}", source=source) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(f"the manifest is not valid YAML{where}", source=source) from None
    if not isinstance(data, dict):
        raise ManifestError("the manifest must be a mapping", source=source)
    try:
        return EnvironmentManifest.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False, include_context=False, include_input=False)[0]
        key = _location(first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"is not a manifest key{_did_you_mean(first['loc'])}"
        others = error.error_count() - 1
        if others:
            message += f" (and {others} more problem{'s' if others > 1 else ''} in this manifest)"
        raise ManifestError(message, key=key, source=source) from None


def resolve_manifest_config_path(manifest_path: str | Path, manifest: EnvironmentManifest) -> Path:
    """The bundle's config file; it may not leave its `environments/` or `benchmarks/` tree."""
    path = Path(manifest_path).absolute()
    relative = Path(manifest.config_path)
    if relative.is_absolute():
        raise ManifestError("must be relative to the manifest", key="config_path", source=str(path))
    catalog = next((p for p in path.parents if p.name in ("benchmarks", "environments")), path.parent)
    resolved = (path.parent / relative).resolve()
    if not resolved.is_relative_to(catalog.resolve()):
        raise ManifestError(f"leaves the bundle's tree {catalog}", key="config_path", source=str(path))
    return resolved


def manifest_for_config(config_path: Path) -> Path | None:
    """The manifest that declares `config_path` as its bundle's config, if there is one."""
    candidate = config_path.parent / MANIFEST_FILENAME
    return candidate if candidate.is_file() else None


def validate_bundle_manifest(config_path: Path) -> EnvironmentManifest | None:
    """Validate the manifest next to a loaded config, if it names that config as its own."""
    manifest_path = manifest_for_config(config_path)
    if manifest_path is None:
        return None
    manifest = load_manifest(manifest_path)
    if resolve_manifest_config_path(manifest_path, manifest) != config_path.resolve():
        return None  # the manifest describes another config of the folder
    return manifest


def dump_manifest(manifest: EnvironmentManifest) -> str:
    """YAML of a manifest, leaving out defaults an author does not write."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    if manifest.config_path == "config.yaml":
        data.pop("config_path")
    if manifest.prompt_source == PromptSource.TEMPLATE:
        data.pop("prompt_source")
    data["resources_server"] = manifest.resources_server
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


__all__ = [
    "MANIFEST_FILENAME",
    "AdoptedFrom",
    "DatasetKind",
    "Determinism",
    "EnvironmentKind",
    "EnvironmentManifest",
    "EnvironmentState",
    "IntegrationProfile",
    "Lifecycle",
    "ManifestDataset",
    "ManifestError",
    "PromptSource",
    "Reward",
    "SessionModel",
    "dump_manifest",
    "load_manifest",
    "manifest_for_config",
    "resolve_manifest_config_path",
    "validate_bundle_manifest",
]
