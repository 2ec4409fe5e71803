"""What an agent observed during a rollout, in NeMo Gym 0.7.0's record shapes.

Two families of records:
- An `AgentObservationBundle` is what an agent server returns for one rollout: typed records
  (its invocations, tool calls, sandbox use, context compactions) plus the gaps it could not
  observe. Environment servers put it on their results as `ng_agent_observations`.
- A `TrajectoryRecord` is the standard trajectory of one rollout (`ng_trajectory` on a result):
  invocations with their conversations, turns (one per model decision), model calls with token
  statistics, and tool calls with their outputs.

Every model forbids unknown keys, so a producer's typo is an error rather than a lost field.
A gap (`ObservationGap`) is how a producer says "this fact was not available", which is
different from "this did not happen".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nemo_gym.config_types import ModelServerRef
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseInputItem

if TYPE_CHECKING:
    from nemo_gym.base_responses_api_model import ModelCallRecord

_Call = TypeVar("_Call")


class ObservationModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelCallRef(ObservationModel):
    """Identifies one model call: by `model_call_id`, or by the (model server, response id) pair."""

    model_call_id: str | None = None
    model_ref: ModelServerRef | None = None
    response_id: str | None = None

    @model_validator(mode="after")
    def _joinable(self) -> ModelCallRef:
        if not self.model_call_id and not (self.model_ref is not None and self.response_id):
            raise ValueError("a model call reference needs model_call_id, or both model_ref and response_id")
        return self


class TrajectoryTokenStats(ObservationModel):
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    total_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)


class ResponseMetadataFields(BaseModel):
    """What a model call answered and where the answer came from: the fields a captured call
    (`ModelCallRecord`) and a trajectory's model call (`TrajectoryResponseMetadata`) share."""

    response_id: str | None = None
    model_ref: ModelServerRef | None = None
    model: str | None = None
    dialect: str | None = None
    # The HTTP status the caller got.
    status_code: int | None = Field(default=None, ge=100, le=599)
    response_status: str | None = None
    finish_reason: str | None = None
    upstream_attempted: bool | None = None
    response_source: Literal["upstream", "local"] | None = None
    upstream_status_code: int | None = Field(default=None, ge=100, le=599)
    local_response_reason: str | None = None
    error_category: str | None = None


class TrajectoryResponseMetadata(ObservationModel, ResponseMetadataFields):
    latency_ttft_ms: float | None = Field(default=None, ge=0)


class TrajectoryModelCall(ObservationModel):
    model_call_id: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration_ms: float | None = Field(default=None, ge=0)
    request: Any | None = None
    response: Any | None = None
    response_metadata: TrajectoryResponseMetadata = Field(default_factory=TrajectoryResponseMetadata)
    token_stats: TrajectoryTokenStats = Field(default_factory=TrajectoryTokenStats)


class TrajectoryTurn(ObservationModel):
    """One model decision of an invocation: what the model saw, what it answered."""

    invocation_id: str
    task_id: str
    rollout_id: str
    turn_no: int = Field(ge=1)
    timestamp: float
    question: Any | None = None
    answer: Any | None = None
    reasoning_content: Any | None = None
    resolved: bool | None = None
    # Tool calls executed in this invocation up to and including this turn.
    step_count: int = Field(ge=0)
    model_calls: list[ModelCallRef] = Field(default_factory=list)


class AgentInvocation(ObservationModel):
    """One conversation of the root agent or of a sub-agent it spawned."""

    kind: Literal["agent_invocation"] = "agent_invocation"
    invocation_id: str
    parent_invocation_id: str | None = None
    spawned_by_tool_call_id: str | None = None
    status: Literal["completed", "failed", "incomplete", "unknown"] = "unknown"
    duration_ms: float | None = Field(default=None, ge=0)
    error_type: str | None = None
    model_calls: list[ModelCallRef] = Field(default_factory=list)
    conversation: list[NeMoGymResponseInputItem] = Field(default_factory=list)


class ToolCallObservation(ObservationModel):
    """Timing and outcome of one tool call, measured where the agent executed it."""

    kind: Literal["tool_call"] = "tool_call"
    invocation_id: str
    tool_call_id: str
    # The sandbox the call ran in (shared by concurrent calls; not a per-call resource figure).
    sandbox_id: str | None = None
    tool_name: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration_ms: float | None = Field(default=None, ge=0)
    timing_source: Literal["executor", "artifact", "harness"] | None = None
    status: Literal["completed", "failed", "timeout", "cancelled", "incomplete", "unknown"] = "unknown"
    error_type: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ToolCallObservation:
        if (
            self.started_at is not None
            and self.completed_at is not None
            and self.completed_at < self.started_at
        ):
            raise ValueError("completed_at must not be before started_at")
        return self


class TrajectoryToolCall(ToolCallObservation):
    """A tool call in a trajectory, with the output the model saw."""

    output: Any | None = None


class SandboxObservation(ObservationModel):
    """How a sandbox used by the rollout ended and what it consumed over its lifetime."""

    kind: Literal["sandbox"] = "sandbox"
    role: Literal["agent", "verifier", "environment"]
    provider: str | None = None
    sandbox_id: str | None = None
    outcome: Literal["completed", "failed", "timeout", "oom", "sandbox_error", "cancelled", "unknown"] = (
        "unknown"
    )
    exit_code: int | None = None
    wall_time_s: float | None = Field(default=None, ge=0)
    # Measured totals only: never a configured limit or an estimate.
    cpu_time_s: float | None = Field(default=None, ge=0)
    peak_memory_mib: float | None = Field(default=None, ge=0)
    resource_usage_source: str | None = None
    error_type: str | None = None


class ContextCompactionObservation(ObservationModel):
    """A context compaction the agent harness reported, with the model calls around it."""

    kind: Literal["context_compaction"] = "context_compaction"
    invocation_id: str
    observed_at: float | None = None
    trigger: str | None = None
    tokens_before: int | None = Field(default=None, ge=0)
    tokens_after: int | None = Field(default=None, ge=0)
    outcome: Literal["completed", "failed", "aborted", "unknown"] = "unknown"
    summary: str | None = None
    first_kept_item_id: str | None = None
    before_model_call: ModelCallRef | None = None
    model_calls: list[ModelCallRef] = Field(default_factory=list)
    after_model_call: ModelCallRef | None = None


class ObservationGap(ObservationModel):
    """A fact the producer could not observe, or not join to another fact exactly."""

    code: str
    invocation_id: str | None = None
    detail: str | None = None


AgentObservationRecord = Annotated[
    AgentInvocation | ToolCallObservation | ContextCompactionObservation | SandboxObservation,
    Field(discriminator="kind"),
]


def _check_invocation_tree(invocations: list[AgentInvocation]) -> None:
    by_id = {invocation.invocation_id: invocation for invocation in invocations}
    if len(by_id) != len(invocations):
        raise ValueError("invocation_id must be unique within an observation bundle")
    # A parent that is not in the bundle is fine (a producer may see part of the tree); a cycle is not.
    acyclic: set[str] = set()
    for start in by_id:
        path: set[str] = set()
        current: str | None = start
        while current is not None and current in by_id and current not in acyclic:
            if current in path:
                raise ValueError("parent_invocation_id must not form a cycle")
            path.add(current)
            current = by_id[current].parent_invocation_id
        acyclic |= path


class AgentObservationBundle(ObservationModel):
    """The records one agent server returns for one rollout (their order means nothing)."""

    source: str
    records: list[AgentObservationRecord] = Field(default_factory=list)
    gaps: list[ObservationGap] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_tree(self) -> AgentObservationBundle:
        _check_invocation_tree([record for record in self.records if isinstance(record, AgentInvocation)])
        return self


class TrajectoryRecord(ObservationModel):
    """The standard trajectory of one rollout."""

    schema_version: Literal["1.0"] = "1.0"
    task_id: str
    rollout_id: str
    invocations: list[AgentInvocation] = Field(default_factory=list)
    turns: list[TrajectoryTurn] = Field(default_factory=list)
    model_calls: list[TrajectoryModelCall] = Field(default_factory=list)
    tool_calls: list[TrajectoryToolCall] = Field(default_factory=list)
    gaps: list[ObservationGap] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TrajectoryRecord:
        invocation_ids = [invocation.invocation_id for invocation in self.invocations]
        if len(invocation_ids) != len(set(invocation_ids)):
            raise ValueError("invocation_id must be unique within a trajectory")
        call_ids = [call.model_call_id for call in self.model_calls if call.model_call_id]
        if len(call_ids) != len(set(call_ids)):
            raise ValueError("model_call_id must be unique within a trajectory")
        seen: set[tuple[str, int]] = set()
        for turn in self.turns:
            if (turn.task_id, turn.rollout_id) != (self.task_id, self.rollout_id):
                raise ValueError("every turn must carry the trajectory's task_id and rollout_id")
            key = (turn.invocation_id, turn.turn_no)
            if key in seen:
                raise ValueError("turn numbers must be unique within an invocation")
            seen.add(key)
        return self


# ---------------------------------------------------------------- joining references to captured calls


def _ref_key(ref: ModelCallRef) -> tuple[str | None, tuple[str, str] | None, str | None]:
    model = (ref.model_ref.type, ref.model_ref.name) if ref.model_ref is not None else None
    return ref.model_call_id, model, ref.response_id


class IndexedCall(NamedTuple, Generic[_Call]):
    """A model call (whatever represents it) and the identities a `ModelCallRef` may name it by."""

    call: _Call
    model_call_id: str | None
    model_ref: ModelServerRef | None
    response_id: str | None


class CallIndex(Generic[_Call]):
    """Model calls, findable by either identity a `ModelCallRef` may carry; the index answers with
    the calls as given (captured records, positions in a trajectory)."""

    def __init__(self, entries: Iterable[IndexedCall[_Call]]) -> None:
        self.by_call_id: dict[str, list[IndexedCall[_Call]]] = {}
        self.by_response: dict[tuple[str, str, str], list[_Call]] = {}
        for entry in entries:
            if entry.model_call_id:
                self.by_call_id.setdefault(entry.model_call_id, []).append(entry)
            if entry.model_ref is not None and entry.response_id:
                key = (entry.model_ref.type, entry.model_ref.name, entry.response_id)
                self.by_response.setdefault(key, []).append(entry.call)

    @classmethod
    def of_records(cls, calls: Iterable[ModelCallRecord]) -> CallIndex[ModelCallRecord]:
        return cls(IndexedCall(call, call.model_call_id, call.model_ref, call.response_id) for call in calls)

    def find(self, ref: ModelCallRef) -> list[_Call]:
        if ref.model_call_id:
            return [
                entry.call
                for entry in self.by_call_id.get(ref.model_call_id, [])
                if (ref.model_ref is None or ref.model_ref == entry.model_ref)
                and (ref.response_id is None or ref.response_id == entry.response_id)
            ]
        if ref.model_ref is None or not ref.response_id:
            return []
        return self.by_response.get((ref.model_ref.type, ref.model_ref.name, ref.response_id), [])


def _canonical(call: ModelCallRecord) -> ModelCallRef:
    return ModelCallRef(
        model_call_id=call.model_call_id, model_ref=call.model_ref, response_id=call.response_id
    )


_JOIN_GAP_CODES = frozenset(
    {"model_call_reference_ambiguous", "model_call_reference_conflict", "model_call_reference_unmatched"}
)


def _unresolved_code(candidates: list[Any]) -> str:
    return "model_call_reference_ambiguous" if candidates else "model_call_reference_unmatched"


def join_model_call_observations(
    bundle: AgentObservationBundle, calls: Iterable[ModelCallRecord]
) -> AgentObservationBundle:
    """Resolve the bundle's model-call references against the calls a model server captured.

    A reference is replaced by the captured call's full identity only when exactly one call
    matches it and no other invocation already owns that call; otherwise it stays as written
    and a gap says why (unmatched, ambiguous, conflict). A captured call tagged with an
    invocation's id (its client session) is attached to that invocation. Captured calls no
    invocation owns are reported as `model_call_ownership_unavailable`. The input bundle is
    not modified; joining twice gives the same result.
    """
    result = bundle.model_copy()
    result.records = [
        record.model_copy(update={"model_calls": list(record.model_calls)})
        if isinstance(record, AgentInvocation | ContextCompactionObservation)
        else record
        for record in bundle.records
    ]
    invocations = [record for record in result.records if isinstance(record, AgentInvocation)]
    compactions = [record for record in result.records if isinstance(record, ContextCompactionObservation)]
    captured = list(calls)
    index = CallIndex.of_records(captured)

    _attach_session_calls(invocations, captured, index)
    gaps = _carried_gaps(bundle)
    owner: dict[int, str] = {}
    for invocation in invocations:
        invocation.model_calls = _resolve_invocation_calls(invocation, index, owner, gaps)
    for compaction in compactions:
        _resolve_compaction(compaction, index, owner, gaps)
    for call in captured:
        if id(call) not in owner:
            label = f"{call.model_call_id or call.response_id or 'unknown'}:call_index={call.call_index}"
            gaps.append(ObservationGap(code="model_call_ownership_unavailable", detail=f"capture:{label}"))
    result.gaps = list({(gap.code, gap.invocation_id, gap.detail): gap for gap in gaps}.values())
    return result


def _attach_session_calls(
    invocations: list[AgentInvocation], captured: list[ModelCallRecord], index: CallIndex[ModelCallRecord]
) -> None:
    """Calls the model server attributed to an invocation (client session id) join that invocation."""
    by_id = {invocation.invocation_id: invocation for invocation in invocations}
    for call in captured:
        invocation = by_id.get(call.client_session_id or "")
        if invocation is None or not call.model_call_id:
            continue
        if any(any(found is call for found in index.find(ref)) for ref in invocation.model_calls):
            continue
        invocation.model_calls.append(_canonical(call))


def _carried_gaps(bundle: AgentObservationBundle) -> list[ObservationGap]:
    """The bundle's gaps without those an earlier join wrote (so that joining twice is idempotent)."""
    return [
        gap
        for gap in bundle.gaps
        if gap.code not in _JOIN_GAP_CODES
        and not (
            gap.code == "model_call_ownership_unavailable"
            and gap.invocation_id is None
            and (gap.detail or "").startswith("capture:")
        )
    ]


def _call_label(call: ModelCallRecord | ModelCallRef) -> str | None:
    return call.model_call_id or call.response_id


def _resolve_invocation_calls(
    invocation: AgentInvocation,
    index: CallIndex[ModelCallRecord],
    owner: dict[int, str],
    gaps: list[ObservationGap],
) -> list[ModelCallRef]:
    """Each reference that matches one call nobody owns yet becomes that call's identity, and its owner."""
    resolved: list[ModelCallRef] = []
    for ref in invocation.model_calls:
        candidates = index.find(ref)
        if len(candidates) != 1:
            code, detail = _unresolved_code(candidates), _call_label(ref)
        elif id(candidates[0]) in owner:
            code, detail = "model_call_reference_conflict", _call_label(candidates[0])
        else:
            owner[id(candidates[0])] = invocation.invocation_id
            resolved.append(_canonical(candidates[0]))
            continue
        gaps.append(ObservationGap(code=code, invocation_id=invocation.invocation_id, detail=detail))
        resolved.append(ref)
    return resolved


def _resolve_compaction(
    compaction: ContextCompactionObservation,
    index: CallIndex[ModelCallRecord],
    owner: dict[int, str],
    gaps: list[ObservationGap],
) -> None:
    """A compaction's own calls resolve only to calls its invocation owns; the calls before and
    after it, to any call no other invocation owns."""
    compaction.model_calls = [
        _compaction_call(ref, compaction, index, owner, gaps, "model_calls", unowned_ok=False) or ref
        for ref in compaction.model_calls
    ]
    for field_name in ("before_model_call", "after_model_call"):
        ref = getattr(compaction, field_name)
        if ref is not None:
            call = _compaction_call(ref, compaction, index, owner, gaps, field_name, unowned_ok=True)
            if call is not None:
                setattr(compaction, field_name, call)


def _compaction_call(
    ref: ModelCallRef,
    compaction: ContextCompactionObservation,
    index: CallIndex[ModelCallRecord],
    owner: dict[int, str],
    gaps: list[ObservationGap],
    where: str,
    *,
    unowned_ok: bool,
) -> ModelCallRef | None:
    """The call's full identity, or None with a gap saying why it does not resolve."""
    candidates = index.find(ref)
    if len(candidates) != 1:
        code, label = _unresolved_code(candidates), _call_label(ref)
    else:
        call_owner = owner.get(id(candidates[0]))
        if call_owner == compaction.invocation_id or (unowned_ok and call_owner is None):
            return _canonical(candidates[0])
        code = (
            "model_call_reference_conflict" if call_owner is not None else "model_call_ownership_unavailable"
        )
        label = _call_label(candidates[0])
    gaps.append(ObservationGap(code=code, invocation_id=compaction.invocation_id, detail=f"{where}:{label}"))
    return None


@dataclass(frozen=True, slots=True)
class AgentEpisode:
    """An agent's final response together with what was observed while producing it."""

    response: NeMoGymResponse
    observations: AgentObservationBundle


__all__ = [
    "AgentEpisode",
    "AgentInvocation",
    "AgentObservationBundle",
    "AgentObservationRecord",
    "CallIndex",
    "ContextCompactionObservation",
    "IndexedCall",
    "ModelCallRef",
    "ObservationGap",
    "ObservationModel",
    "ResponseMetadataFields",
    "SandboxObservation",
    "ToolCallObservation",
    "TrajectoryModelCall",
    "TrajectoryRecord",
    "TrajectoryResponseMetadata",
    "TrajectoryTokenStats",
    "TrajectoryToolCall",
    "TrajectoryTurn",
    "join_model_call_observations",
]
