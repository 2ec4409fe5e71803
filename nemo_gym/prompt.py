"""Prompt configs: YAML templates (`system` optional, `user` required) that build a row's
`responses_create_params.input` from its fields at rollout time.

A template and a pre-filled `input` exclude each other, so the same prepared data can be swept
over several prompts without re-preparing it. Placeholders are `{field}` (Python `str.format`
on the row's top-level fields); a literal brace is doubled.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nemo_gym.config_types import BaseNeMoGymCLIConfig
from nemo_gym.paths import resolve_under_cwd_or_install


class PromptConfig(BaseModel):
    """One prompt YAML file."""

    model_config = ConfigDict(extra="forbid")

    user: str
    system: str | None = None


class PromptConfigError(ValueError):
    """A prompt file that cannot be read or is not a valid prompt config (names the file)."""


@lru_cache(maxsize=64)
def load_prompt_config(path: str) -> PromptConfig:
    """Read and validate a prompt YAML (relative paths: extra roots, cwd, then this checkout); cached."""
    resolved = resolve_under_cwd_or_install(path)
    try:
        data = yaml.safe_load(Path(resolved).read_text())
    except OSError as exc:
        raise PromptConfigError(f"cannot read prompt config {resolved}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PromptConfigError(f"invalid YAML in prompt config {resolved}: {exc}") from None
    try:
        return PromptConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'file'}: {error['msg']}" for error in exc.errors()
        )
        raise PromptConfigError(f"prompt config {resolved} is not valid: {problems}") from None


def fill_prompt(prompt_config: PromptConfig, row: dict[str, Any]) -> list[dict[str, str]]:
    """The system (if any) and user messages with the row's fields filled in."""
    try:
        messages = []
        if prompt_config.system is not None:
            messages.append({"role": "system", "content": prompt_config.system.format_map(row)})
        messages.append({"role": "user", "content": prompt_config.user.format_map(row)})
    except KeyError as exc:
        raise KeyError(
            f"the prompt template uses the field {exc} but the row only has the fields {list(row)}"
        ) from None
    return messages


def validate_prompt_compatibility(rows: list[dict[str, Any]], prompt_config: PromptConfig) -> None:
    """Refuse rows that already have `responses_create_params.input` (naming every one)."""
    conflicting = [
        index for index, row in enumerate(rows) if (row.get("responses_create_params") or {}).get("input")
    ]
    if conflicting:
        raise ValueError(
            "rows with responses_create_params.input cannot also take a prompt_config; use one or the other. "
            f"Rows with input: {conflicting}"
        )


def apply_prompt_to_row(row: dict[str, Any], prompt_config: PromptConfig) -> dict[str, Any]:
    """A new row whose `responses_create_params.input` is the filled template (other params kept)."""
    messages = fill_prompt(prompt_config, row)
    params = row.get("responses_create_params")
    params = dict(params) if isinstance(params, dict) else {}
    params["input"] = messages
    return {**row, "responses_create_params": params}


def materialize_prompts(input_jsonl: str, prompt_config: str, output_jsonl: str) -> None:
    """Write `input_jsonl` with the template applied to every row, each stamped with the prompt file used."""
    config = load_prompt_config(prompt_config)
    prompt_path = str(resolve_under_cwd_or_install(prompt_config))
    with open(input_jsonl) as source:
        rows = [json.loads(line) for line in source if line.strip()]
    validate_prompt_compatibility(rows, config)
    output = Path(output_jsonl)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as sink:
        for row in rows:
            sink.write(
                json.dumps({**apply_prompt_to_row(row, config), "prompt_config_used": prompt_path}) + "\n"
            )
    print(f"Materialized {len(rows)} rows to {output}")


class MaterializePromptsConfig(BaseNeMoGymCLIConfig):
    """Apply a prompt template to a JSONL dataset, writing rows with `responses_create_params.input` filled."""

    input_jsonl_fpath: str = Field(description="JSONL rows without responses_create_params.input.")
    prompt_config: str = Field(description="The prompt YAML file.")
    output_jsonl_fpath: str = Field(description="Where the rows with their prompts go.")


__all__ = [
    "MaterializePromptsConfig",
    "PromptConfig",
    "PromptConfigError",
    "apply_prompt_to_row",
    "fill_prompt",
    "load_prompt_config",
    "materialize_prompts",
    "validate_prompt_compatibility",
]
