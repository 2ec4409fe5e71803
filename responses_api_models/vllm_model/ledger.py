"""The token ledger: every token-mode request's prompt ids, from plan to report, in one place.

`plan(body, session_id)` decides what goes upstream: the messages without the carried id lists,
`return_token_ids` (the prompt ids come from vLLM's own answer), and, when an earlier turn's
ids were carried back, the spliced prompt as `kv_transfer_params.prompt_token_ids` (see
`nemo_gym.conversion.prefix`), or the reason it was refused. `settle(plan, answer)` turns the
upstream's answer into the token fields and the drift report, checks that the upstream used the
spliced prompt, and counts each outcome per upstream. Serving and streaming both go through it.

What it learns per upstream (`UpstreamTokenFacts`): whether that server honours the spliced
prompt and whether it returns prompt ids inline (an older vLLM that does not is asked with
`/tokenize`, sent exactly the messages the generation rendered). What it learns of the template
(same for every upstream of one model): its closing tokens (`TemplateProbe`), and which ids end
a generation that stopped on its own (from answers).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from nemo_gym.conversion.chat_stream import ChatAccumulator
from nemo_gym.conversion.chat_to_responses import first_choice
from nemo_gym.conversion.prefix import (
    CarriedTokens,
    DriftReport,
    SpliceError,
    SpliceOutcome,
    carried_tokens,
    closing_from_rendering,
    drift_report,
    join,
    opening_mismatch,
    splice,
    tail_after,
    tokens_array,
    without_token_fields,
)
from nemo_gym.conversion.tokens import generation_tokens, prompt_tokens_from
from nemo_gym.exceptions import APIError, ContextLengthExceeded, UpstreamFormatError
from nemo_gym.upstream.pool import Upstream, UpstreamPool
from responses_api_models.vllm_model.config import VLLMModelConfig
from responses_api_models.vllm_model.template_probe import TemplateProbe

logger = logging.getLogger("nemo_gym.vllm_model")

IGNORED = (
    "upstream ignores kv_transfer_params.prompt_token_ids (vLLM >= 0.32 honours it); "
    "the prompt was rendered by the chat template, so it may drift from the carried tokens"
)
# Keys of a chat request that change what vLLM renders, and that /tokenize takes too.
_RENDERING_KEYS = (
    "tools",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "mm_processor_kwargs",
)
_MAX_STOP_IDS = 4
_MAX_OPENINGS = 256


class DriftCounts:
    """Per-upstream counts of token-mode requests that carried an earlier turn's ids."""

    __slots__ = ("measured", "extends", "diverged", "spliced", "fallbacks", "outcomes")
    FIELDS = ("measured", "extends", "diverged", "spliced", "fallbacks")

    def __init__(self) -> None:
        self.measured = 0
        self.extends = 0
        self.diverged = 0
        self.spliced = 0
        self.fallbacks = 0  # not spliced while splicing was on
        self.outcomes = dict.fromkeys(SpliceOutcome, 0)

    def add(self, report: DriftReport) -> None:
        self.measured += 1
        if report.extends_carried_tokens:
            self.extends += 1
        else:
            self.diverged += 1
        if report.spliced:
            self.spliced += 1
        elif report.outcome is not SpliceOutcome.OFF:
            self.fallbacks += 1
        self.outcomes[report.outcome] += 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.FIELDS}
        out["outcomes"] = {outcome.value: n for outcome, n in self.outcomes.items()}
        return out


@dataclass(slots=True)
class UpstreamTokenFacts:
    """What one upstream server showed about itself (None: not seen yet)."""

    honours_prompt_ids: bool | None = None
    returns_prompt_ids: bool | None = None
    counts: DriftCounts = field(default_factory=DriftCounts)


@dataclass(frozen=True, slots=True)
class SplicePlan:
    """What a token-mode request sends, and what its answer is checked against."""

    body: dict[str, Any]  # the chat request to send upstream
    tokenize_body: dict[str, Any]  # the same rendering asked of /tokenize
    carried: CarriedTokens | None  # the latest earlier turn's ids, if the request carried any
    outcome: SpliceOutcome | None  # None: nothing carried; SPLICED: `prompt` was sent
    prompt: list[int] | None = None
    reason: str | None = None  # why it was not spliced
    upstream: Upstream | None = None  # where the renderings were asked; the generation goes there


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """The token data of one upstream answer, plain or streamed."""

    prompt_token_ids: list[int] | None  # as the upstream returned them (None: not returned)
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    finish_reason: str | None
    stop_reason: Any
    upstream: Upstream

    @classmethod
    def from_chat(cls, chat: dict[str, Any], upstream: Upstream) -> TokenAnswer:
        choice = first_choice(chat)
        return cls._of(chat.get("prompt_token_ids"), generation_tokens(choice), choice, upstream)

    @classmethod
    def from_stream(cls, accumulated: ChatAccumulator, upstream: Upstream) -> TokenAnswer:
        return cls._of(
            accumulated.prompt_token_ids, accumulated.generation(), accumulated.choice0(), upstream
        )

    @classmethod
    def _of(
        cls, returned: Any, tokens: tuple[list[int], list[float]], choice: dict[str, Any], upstream: Upstream
    ) -> TokenAnswer:
        ids, log_probs = tokens
        prompt_ids = returned if isinstance(returned, list) else None
        return cls(
            prompt_ids, ids, log_probs, choice.get("finish_reason"), choice.get("stop_reason"), upstream
        )


@dataclass(frozen=True, slots=True)
class TokenReport:
    """The token fields of a response, and the drift report when earlier ids were carried."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    drift: DriftReport | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_token_ids": self.prompt_token_ids,
            "generation_token_ids": self.generation_token_ids,
            "generation_log_probs": self.generation_log_probs,
        }
        if self.drift is not None:
            out["token_drift"] = self.drift.as_dict()
        return out


def _ids(raw: bytes) -> list[int]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamFormatError("/tokenize returned malformed JSON") from None
    if not isinstance(answer, dict):
        raise UpstreamFormatError("/tokenize returned no 'tokens'")
    return prompt_tokens_from(answer, "tokenize")


def with_prompt(body: dict[str, Any], prompt: list[int]) -> dict[str, Any]:
    kv = body.get("kv_transfer_params")
    kv = {**kv, "prompt_token_ids": prompt} if isinstance(kv, dict) else {"prompt_token_ids": prompt}
    return {**body, "kv_transfer_params": kv}


class TokenLedger:
    def __init__(self, config: VLLMModelConfig, pool: UpstreamPool, probe: TemplateProbe) -> None:
        self.pool = pool
        self.probe = probe
        self.model = config.model
        self.mode = config.prefix_token_ids
        self._configured_eot = frozenset(config.end_of_turn_token_ids or ())
        self._stop_ids: set[int] = set()
        self._facts: dict[int, UpstreamTokenFacts] = {}
        # the opening's rendering (the rollout's first prompt), by its /tokenize body
        self._openings: OrderedDict[bytes, list[int]] = OrderedDict()

    # ---- what was learned ------------------------------------------------------------------
    def facts(self, index: int) -> UpstreamTokenFacts:
        facts = self._facts.get(index)
        if facts is None:
            facts = self._facts[index] = UpstreamTokenFacts()
        return facts

    def drift_counts(self, index: int) -> dict[str, Any]:
        facts = self._facts.get(index)
        return (facts.counts if facts else DriftCounts()).as_dict()

    @property
    def stop_ids(self) -> frozenset[int]:
        return self._configured_eot or frozenset(self._stop_ids)

    def _learn_stop(self, answer: TokenAnswer) -> None:
        """A generation that stopped on the model's own stop token (no stop string) ends with
        one of the model's stop ids: remember it, so a carried generation ending with it counts
        as finished rather than cut off."""
        ids = answer.generation_token_ids
        if (
            self._configured_eot
            or not ids
            or answer.finish_reason not in ("stop", "tool_calls")
            or isinstance(answer.stop_reason, str)
            or len(self._stop_ids) >= _MAX_STOP_IDS
        ):
            return
        self._stop_ids.add(ids[-1])

    # ---- plan --------------------------------------------------------------------------------
    def tokenize_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The /tokenize request that renders exactly what the chat request `body` renders."""
        tokenize: dict[str, Any] = {"model": self.model, "messages": body["messages"]}
        for key in _RENDERING_KEYS:
            if body.get(key) is not None:
                tokenize[key] = body[key]
        return tokenize

    async def plan(self, body: dict[str, Any], session_id: str | None) -> SplicePlan:
        messages = body["messages"]
        carried = carried_tokens(messages)
        out = {**body, "messages": without_token_fields(messages), "return_token_ids": True}
        tokenize = self.tokenize_body(out)
        if carried is None:
            return SplicePlan(out, tokenize, None, None)
        if self.mode == "off":
            return SplicePlan(out, tokenize, carried, SpliceOutcome.OFF)
        upstream = self.pool.route(session_id)
        if self.facts(upstream.index).honours_prompt_ids is False:
            return self._refused(out, tokenize, carried, SpliceOutcome.UPSTREAM_IGNORES, IGNORED, upstream)
        try:
            prompt = await self._splice(tokenize, carried, upstream)
        except SpliceError as exc:
            return self._refused(out, tokenize, carried, exc.outcome, str(exc), upstream)
        return SplicePlan(
            with_prompt(out, prompt), tokenize, carried, SpliceOutcome.SPLICED, prompt, None, upstream
        )

    def _refused(
        self,
        body: dict[str, Any],
        tokenize: dict[str, Any],
        carried: CarriedTokens,
        outcome: SpliceOutcome,
        why: str,
        upstream: Upstream,
    ) -> SplicePlan:
        if self.mode == "required":
            raise APIError(502, f"prefix_token_ids is 'required' but the prompt could not be spliced: {why}")
        return SplicePlan(body, tokenize, carried, outcome, None, why, upstream)

    async def _tokens(self, body: dict[str, Any], upstream: Upstream) -> list[int]:
        answer, _ = await self.pool.post("/tokenize", body, upstream=upstream, at_root=True)
        return prompt_tokens_from(answer, "tokenize")

    async def _rendered(self, body: dict[str, Any], upstream: Upstream) -> list[int]:
        """A rendering the splice needs; a template that refuses it refuses the splice (the
        generation then says why, or succeeds), a prompt too long is the usual empty result."""
        return _ids(await self._rendered_raw(body, upstream))

    async def _rendered_raw(self, body: dict[str, Any], upstream: Upstream) -> bytes:
        try:
            raw, _ = await self.pool.post_raw("/tokenize", body, upstream=upstream, at_root=True)
            return raw
        except ContextLengthExceeded:
            raise
        except APIError as exc:
            if 400 <= exc.status < 500:
                raise SpliceError(f"the template could not render the conversation: {exc.message}") from None
            raise

    def _rendering(
        self, tokenize: dict[str, Any], messages: list[dict[str, Any]], gen: bool
    ) -> dict[str, Any]:
        body = {**tokenize, "messages": messages, "add_generation_prompt": gen}
        body.pop("continue_final_message", None)
        return body

    async def _opening(self, body: dict[str, Any], upstream: Upstream) -> list[int]:
        """The rendering of the messages before the first assistant turn: the same for every
        turn of a rollout and every repeat of a task, so it is kept (a small LRU)."""
        key = orjson.dumps(body)
        ids = self._openings.get(key)
        if ids is not None:
            self._openings.move_to_end(key)
            return ids
        ids = await self._rendered(body, upstream)
        self._openings[key] = ids
        if len(self._openings) > _MAX_OPENINGS:
            self._openings.popitem(last=False)
        return ids

    async def _splice(
        self, tokenize: dict[str, Any], carried: CarriedTokens, upstream: Upstream
    ) -> list[int]:
        messages = tokenize["messages"]
        j = carried.index
        first = next(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        jobs: list[Any] = [
            self._rendered_raw(tokenize, upstream),
            self._rendered_raw(self._rendering(tokenize, messages[: j + 1], False), upstream),
        ]
        if first > 0:
            jobs.append(self._opening(self._rendering(tokenize, messages[:first], True), upstream))
        if not self._configured_eot:
            jobs.append(self.probe.closing(upstream))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:  # every job finished: nothing is left running when one failed
            if isinstance(result, BaseException):
                raise result
        whole_raw, through_raw = results[0], results[1]
        opening = results[2] if first > 0 else None
        closing = results[-1] if not self._configured_eot else None
        if opening is not None:
            why = opening_mismatch(carried, opening)
            # A carried prompt that is itself the template's rendering of the turns before (an
            # earlier turn was not spliced) starts where the template puts it: also fine.
            if why and carried.prompt_token_ids != await self._rendered(
                self._rendering(tokenize, messages[:j], True), upstream
            ):
                raise SpliceError(why, SpliceOutcome.CONVERSATION_CHANGED)
        if closing:  # the common case costs no parsing of the two long renderings
            whole_ids, through_ids = tokens_array(whole_raw), tokens_array(through_raw)
            if whole_ids is not None and through_ids is not None:
                tail = tail_after(through_ids, whole_ids, closing)
                if tail is not None:
                    return join(carried, closing, tail, self.stop_ids)
        whole, through = _ids(whole_raw), _ids(through_raw)
        if not closing:
            closing = closing_from_rendering(through, self.stop_ids)
        if not closing:
            raise SpliceError(
                "the template's closing tokens are unknown (its /tokenize did not answer the probe, "
                "and no generation has stopped on its own yet); set end_of_turn_token_ids"
            )
        return splice(carried, through, whole, closing, self.stop_ids)

    # ---- settle ------------------------------------------------------------------------------
    async def settle(self, plan: SplicePlan, answer: TokenAnswer, *, streaming: bool = False) -> TokenReport:
        self._learn_stop(answer)
        facts = self.facts(answer.upstream.index)
        returned = answer.prompt_token_ids
        if returned is not None:
            facts.returns_prompt_ids = True
            prompt_ids = returned
        else:
            if facts.returns_prompt_ids is not False:
                logger.warning(
                    "upstream %s returns no prompt_token_ids for return_token_ids (vLLM < 0.10?); "
                    "asking its /tokenize with the same messages instead",
                    answer.upstream.base_url,
                )
            facts.returns_prompt_ids = False
            prompt_ids = await self._tokens(plan.tokenize_body, answer.upstream)
        drift = None
        if plan.carried is not None:
            outcome, note = plan.outcome or SpliceOutcome.OFF, plan.reason
            if outcome is SpliceOutcome.SPLICED:
                if returned == plan.prompt:
                    facts.honours_prompt_ids = True
                else:
                    outcome, note = SpliceOutcome.UPSTREAM_IGNORES, self._ignored(answer.upstream, streaming)
            drift = drift_report(plan.carried, prompt_ids, outcome, note)
            facts.counts.add(drift)
        return TokenReport(prompt_ids, answer.generation_token_ids, answer.generation_log_probs, drift)

    def _ignored(self, upstream: Upstream, streaming: bool) -> str:
        facts = self.facts(upstream.index)
        if facts.honours_prompt_ids is not False:
            facts.honours_prompt_ids = False
            logger.warning(
                "upstream %s returned other prompt ids than the kv_transfer_params.prompt_token_ids sent: %s%s",
                upstream.base_url,
                IGNORED,
                "" if self.mode == "required" else "; falling back to plain rendering for it",
            )
        if self.mode != "required":
            return IGNORED
        message = f"prefix_token_ids is 'required' but the prompt could not be spliced: {IGNORED}"
        if streaming:  # the answer is out already: a note, not a failure
            return message
        raise APIError(502, message)
