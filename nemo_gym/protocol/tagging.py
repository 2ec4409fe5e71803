"""How each union of the wire models picks its member.

Left to itself, pydantic validates a union by trying every member in turn: slow on long
trajectories, and the first member that fits wins even when the caller meant another. Every union
here is instead a table, tag → class, written once where its classes are defined, plus a cheap
callable that reads the tag off a dict's fields (or off an already-built instance's class).
`tagged_union` turns the two into the annotated type pydantic validates with.

Items that a policy sampled carry token ids; they select the member's training variant, whose
tag is the plain tag plus `TRAINING_SUFFIX`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_type_hints

from pydantic import Discriminator, Tag

from nemo_gym.protocol.tokens import TokenIDLogProbMixin, has_token_metadata

GENERIC = "generic"
TRAINING_SUFFIX = "__training"

PLAIN_ROLES = frozenset({"user", "system", "developer"})
ITEM_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
OUTPUT_PART_TYPES = frozenset({"output_text", "refusal"})

DictTagger = Callable[[dict[str, Any], frozenset[str]], str]
_F = TypeVar("_F", bound=Callable[..., Any])


def _named(name: str) -> Callable[[_F], _F]:
    """Gives a discriminator the name pydantic's errors show ("Unable to extract tag using
    discriminator _input_part_tag()"). Callers see those errors in 422 bodies, so each
    discriminator keeps the name they have always shown."""

    def rename(function: _F) -> _F:
        function.__name__ = function.__qualname__ = name
        return function

    return rename


def tagged_union(
    members: Mapping[str, type], discriminator: Callable[[Any], str | None], *validators: Any
) -> Any:
    """`Annotated[Union[<each class, tagged>], Discriminator(discriminator), *validators]`.

    `validators` keep their order (pydantic runs before-validators from the last one)."""
    union = Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in members.items())]  # noqa: UP007
    return Annotated[union, Discriminator(discriminator), *validators]


def by_type(*classes: type) -> dict[str, type]:
    """The classes tagged with their `type` literal (a pydantic model's or a TypedDict's), so a
    union whose members say their kind in `type` lists each class once and no tag by hand."""
    members: dict[str, type] = {}
    for cls in classes:
        fields = getattr(cls, "model_fields", None)
        annotation = fields["type"].annotation if fields is not None else get_type_hints(cls)["type"]
        (kind,) = get_args(annotation)
        members[kind] = cls
    return members


def item_union(members: Mapping[str, type], from_dict: DictTagger, name: str, *validators: Any) -> Any:
    """`tagged_union` for Responses items. A dict is tagged by `from_dict` (given the union's
    tags, so an unknown kind goes to `GENERIC`); an instance by the nearest class in its MRO that
    the union lists, so subclasses an environment defines still route."""
    by_class: dict[type, str] = {}
    for tag, cls in members.items():
        by_class.setdefault(cls, tag)
    known = frozenset(members)

    @_named(name)
    def discriminator(value: Any) -> str:
        if isinstance(value, dict):
            return from_dict(value, known)
        for cls in type(value).__mro__:
            tag = by_class.get(cls)
            if tag is not None:
                return tag
        return GENERIC

    return tagged_union(members, discriminator, *validators)


# ---- content parts --------------------------------------------------------------------


@_named("_input_part_tag")
def part_type(value: Any) -> str | None:
    """The `type` of a content part, dict or model."""
    if isinstance(value, dict):
        return value.get("type")
    return getattr(value, "type", None)


@_named("_content_part_tag")
def one_of(value: Any, names: frozenset[str]) -> bool:
    """`value in names`, false for a value that is not a string (a list would raise TypeError, and a
    caller's malformed item must be a validation error, never a 500)."""
    return isinstance(value, str) and value in names


def output_part_type(value: Any) -> str | None:
    """`part_type`, with a bare `{"refusal": ...}` (some providers drop its type) a refusal."""
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None and "refusal" in value:
            return "refusal"
        return kind
    return getattr(value, "type", None)


# ---- Responses items ------------------------------------------------------------------


def message_tag(value: dict[str, Any]) -> str:
    """Which of the three message models a message item is. The API sends all three as
    `type: "message"`: a prompt message (easy: string or parts), a stored input message
    (parts and a status), or an assistant output message (output parts, or empty with an id)."""
    content = value.get("content")
    role, status = value.get("role"), value.get("status")
    if one_of(role, PLAIN_ROLES):
        if isinstance(content, list) and one_of(status, ITEM_STATUSES):
            return "input_message"
        return "easy_message"
    if isinstance(content, list):
        if content and one_of(output_part_type(content[0]), OUTPUT_PART_TYPES):
            return "output_message"
        if not content and isinstance(value.get("id"), str):
            return "output_message"
    return "easy_message"


def untyped_tag(value: dict[str, Any]) -> str:
    """The kind of an item that has no `type` (the API allows it for messages), by its fields."""
    content = value.get("content")
    if "role" in value and isinstance(content, (str, list)):
        return message_tag(value)
    if isinstance(value.get("id"), str) and isinstance(content, list):
        return "output_message"
    if "arguments" in value and "name" in value:
        return "function_call" if "call_id" in value else "mcp_call"
    if "call_id" in value and "output" in value:
        return "function_call_output"
    if isinstance(value.get("id"), str) and isinstance(value.get("summary"), list):
        return "reasoning"
    return GENERIC


def _with_training(tag: str, value: dict[str, Any], known: frozenset[str]) -> str:
    training = tag + TRAINING_SUFFIX
    if training in known and has_token_metadata(value):
        return training
    return tag


def input_item_tag(value: dict[str, Any], known: frozenset[str]) -> str:
    kind = value.get("type")
    if kind == "message":
        tag = message_tag(value)
    elif kind is None:
        tag = untyped_tag(value)
    else:
        tag = kind if one_of(kind, known) else GENERIC
    return _with_training(tag, value, known)


def output_item_tag(value: dict[str, Any], known: frozenset[str]) -> str:
    kind = value.get("type")
    if kind == "message":
        tag = message_tag(value)
    elif kind == "function_call_output":
        # The SDK's output model requires id + status; a bare result is a request item that an
        # agent's trajectory carries along.
        if isinstance(value.get("id"), str) and one_of(value.get("status"), ITEM_STATUSES):
            tag = "function_call_output"
        else:
            tag = "function_call_output_input"
    else:
        tag = kind if one_of(kind, known) else GENERIC
    return _with_training(tag, value, known)


def require_type(value: Any) -> Any:
    """Output items must say their kind: guessing from fields is for request input only."""
    if isinstance(value, dict) and "type" not in value:
        raise ValueError("an output item needs a 'type' field to say what kind of item it is")
    return value


# ---- Chat Completions messages --------------------------------------------------------


@_named("_chat_message_tag")
def chat_message_tag(value: Any) -> str:
    """A chat answer's message: `training` when it carries token ids."""
    if isinstance(value, dict):
        return "training" if has_token_metadata(value) else "plain"
    return "training" if isinstance(value, TokenIDLogProbMixin) else "plain"


@_named("_chat_request_message_tag")
def chat_request_message_tag(value: Any) -> str | None:
    """A chat request message by its role; an assistant message with token ids is its training variant."""
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    if role == "assistant" and isinstance(value, dict) and has_token_metadata(value):
        return "assistant" + TRAINING_SUFFIX
    return role
