"""The token fields an item carries when a policy sampled it: what RL training reads."""

from __future__ import annotations

from typing import Any, NotRequired, TypeAlias

from pydantic import BaseModel
from typing_extensions import TypedDict

# Routed MoE expert ids per token, or an opaque string envelope that Gym never inspects.
RoutedExperts: TypeAlias = str | list[list[list[int]]]

# In the order they appear on an item (the adapter copies them in this order).
TOKEN_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
REQUIRED_TOKEN_METADATA_FIELDS = frozenset(TOKEN_FIELDS)
TOKEN_METADATA_FIELDS = REQUIRED_TOKEN_METADATA_FIELDS | {"routed_experts"}


class TokenIDLogProbMixin(BaseModel):
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    routed_experts: RoutedExperts | None = None


class TokenInfo(TypedDict):
    """The token fields of one generated item (what the adapter puts on its last output item)."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]


class TokenIDLogProbTypedDictMixin(TokenInfo):
    routed_experts: NotRequired[RoutedExperts]


def has_token_metadata(value: dict[str, Any]) -> bool:
    """All three required fields are there: the item is a training variant."""
    return REQUIRED_TOKEN_METADATA_FIELDS <= value.keys()


def check_token_metadata_complete(value: Any) -> Any:
    """An item that has any token field must have all three required ones: half of them would
    silently validate as the plain item and lose the rest."""
    if isinstance(value, dict) and not TOKEN_METADATA_FIELDS.isdisjoint(value):
        missing = REQUIRED_TOKEN_METADATA_FIELDS - value.keys()
        if missing:
            raise ValueError(
                f"Token metadata must include all required fields; missing: {', '.join(sorted(missing))}"
            )
    return value
