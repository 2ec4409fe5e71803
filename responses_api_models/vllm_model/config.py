"""Config of the vLLM adapter (SPEC §6.1). Every key is documented in README.md beside this file."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, model_validator

from nemo_gym.server.base import BaseServerConfig
from nemo_gym.upstream.config import UpstreamConfig

_NOT_HERE = "remove it (this adapter speaks Chat Completions to vLLM and has no such mode)"
ReasoningField = Literal["both", "reasoning", "reasoning_content"]
REASONING_FIELD_VAR = "NEMO_GYM_REASONING_FIELD"


def default_reasoning_field() -> str:
    """NeMo Gym's environment variable picks the key when the config does not (launchers that
    cannot edit the config set it); the config key wins."""
    value = os.environ.get(REASONING_FIELD_VAR, "").strip() or "both"
    if value not in get_args(ReasoningField):
        raise ValueError(
            f"{REASONING_FIELD_VAR} must be one of {list(get_args(ReasoningField))}, got {value!r}"
        )
    return value


class VLLMModelConfig(BaseServerConfig, UpstreamConfig):
    strict_keys: ClassVar[bool] = True
    # NeMo Gym vllm_model keys this adapter does not implement: (NeMo Gym's default, what to do).
    unsupported_keys: ClassVar[dict[str, tuple[Any, str]]] = {
        "use_completions_api": (False, _NOT_HERE),
        "is_responses_native": (False, _NOT_HERE),
        "supply_prefix_token_ids": (
            False,
            "use prefix_token_ids: auto|required (stock vLLM, no engine patch)",
        ),
        "uses_interleaved_reasoning": (True, "remove it (reasoning is carried back as <think> blocks)"),
        "propagate_context_overflow_errors": (
            False,
            "remove it (context overflow always gives an empty result)",
        ),
        "preserve_reasoning_in_assistant_content": (False, _NOT_HERE),
        "sequential_reasoning_allowed": (True, _NOT_HERE),
        "forward_request_chat_template_kwargs": (False, "set chat_template_kwargs in this config"),
        "continue_final_assistant_message": (False, _NOT_HERE),
        "default_headers": ({}, "remove it (only the api_key header is sent)"),
        "endpoint_file": (None, "list the upstreams in base_url"),
        "endpoint_stale_grace_s": (300.0, "remove it (no endpoint file is watched)"),
        "endpoint_connection_retries": (8, "use max_retries"),
        "endpoint_check_interval_s": (10.0, "remove it (no endpoint file is watched)"),
        "forward_session_id_as_conversation_id": (False, _NOT_HERE),
        "audio_root": (None, _NOT_HERE),
    }

    model: str
    return_token_id_information: bool = False
    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    extra_body: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    sampling_overrides: dict[str, Any] | None = None
    request_prompt_and_generation_token_ids: bool = False
    prefix_token_ids: Literal["auto", "required", "off"] = "auto"
    end_of_turn_token_ids: list[int] | None = None
    # Which key(s) carry history reasoning upstream: vLLM >= 0.16 reads `reasoning` on both its chat
    # and /tokenize endpoints; its chat endpoint also renames `reasoning_content`, /tokenize does not.
    reasoning_field: ReasoningField = Field(default_factory=default_reasoning_field, validate_default=True)
    tool_call_id_format: Literal["auto", "keep", "alnum9"] = "auto"

    @model_validator(mode="after")
    def _workers_need_hash_routing(self) -> VLLMModelConfig:
        """Each worker has its own session table, so only `hash` routing keeps a session on
        one upstream across workers; pick it unless the user explicitly chose otherwise."""
        if self.workers > 1:
            if "routing" in self.model_fields_set and self.routing != "hash":
                raise ValueError(
                    "workers > 1 needs routing: hash (round_robin tables are per worker, so sessions would move)"
                )
            self.routing = "hash"
        return self
