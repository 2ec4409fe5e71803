"""The adapter's request logic: convert, route, call vLLM, add token information.

No FastAPI here: handlers in app.py parse the HTTP request and hand plain dicts to these
methods, so the logic is testable with a mocked upstream alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nemo_gym.conversion import (
    ConversionError,
    ConversionOptions,
    UpstreamFormatError,
    chat_to_response,
    empty_response,
    responses_to_chat,
)
from nemo_gym.conversion.chat_to_responses import (
    chat_completion_for_caller,
    empty_chat_completion,
    first_choice,
)
from nemo_gym.conversion.prefix import (
    CarriedTokens,
    SpliceError,
    carried_tokens,
    closing_tokens,
    drift_report,
    end_of_turn_candidates,
    splice,
)
from nemo_gym.conversion.responses_to_chat import chat_messages_for_upstream
from nemo_gym.conversion.tokens import generation_tokens, prompt_tokens_from
from nemo_gym.server.errors import APIError
from nemo_gym.upstream import ContextLengthExceeded, UpstreamPool
from nemo_gym.upstream.pool import Upstream
from responses_api_models.vllm_model.config import VLLMModelConfig

_CHAT = "/chat/completions"
_MAX_LEARNED_EOT = 4
_IGNORED = (
    "upstream ignores kv_transfer_params.prompt_token_ids (vLLM >= 0.32 honours it); "
    "the prompt was rendered by the chat template, so it may drift from the carried tokens"
)

# A conversation ending in an assistant message, rendered finished and left open: the
# difference is the template's closing tokens (see prefix.closing_tokens).
_PROBE_MESSAGES = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]

logger = logging.getLogger("nemo_gym.vllm_model")


class DriftCounts:
    """Per-upstream drift counters, shown on /health?upstream=true."""

    __slots__ = ("measured", "extends", "diverged", "spliced", "fallbacks")

    def __init__(self) -> None:
        self.measured = 0
        self.extends = 0
        self.diverged = 0
        self.spliced = 0
        self.fallbacks = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class VLLMServing:
    def __init__(self, config: VLLMModelConfig, pool: UpstreamPool) -> None:
        self.config = config
        self.pool = pool
        self.options = ConversionOptions(
            model=config.model,
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
        )
        self.token_mode = config.return_token_id_information
        self.inline_ids = config.request_prompt_and_generation_token_ids
        self._extra_body = dict(config.extra_body or {})
        self._overrides = dict(config.sampling_overrides or {})
        if config.chat_template_kwargs:
            self._extra_body.setdefault("chat_template_kwargs", config.chat_template_kwargs)
        self.prefix_mode = config.prefix_token_ids
        self._configured_eot = frozenset(config.end_of_turn_token_ids or ())
        self._learned_eot: set[int] = set()
        # the template's ids after an assistant message: None until asked, [] if that failed
        self._closing: list[int] | None = None
        self._closing_lock = asyncio.Lock()
        # upstream index -> does it honour kv_transfer_params.prompt_token_ids (absent: unknown)
        self._honours_prefix: dict[int, bool] = {}
        self._drift: dict[int, DriftCounts] = {}
        self.context_length_fallbacks = 0  # answered with an empty result instead of an error

    def drift_counts(self, index: int) -> dict[str, int]:
        return (self._drift.get(index) or DriftCounts()).as_dict()

    def _eot_ids(self, carried: CarriedTokens) -> frozenset[int]:
        known = self._configured_eot or self._learned_eot.union(self._closing[:1] if self._closing else ())
        return end_of_turn_candidates(carried, known)

    async def _template_closing(self, upstream: Upstream) -> list[int]:
        """Asked of the upstream once per process, at the first splice, when
        end_of_turn_token_ids is not configured: two /tokenize calls of a two-message
        conversation. Without it a turn cut off by max_tokens could only be aligned by
        guessing its last id as the end-of-turn token (and the guess is usually wrong)."""
        if self._closing is not None:
            return self._closing
        async with self._closing_lock:
            if self._closing is not None:
                return self._closing
            base: dict[str, Any] = {
                "model": self.config.model,
                "messages": _PROBE_MESSAGES,
                "add_generation_prompt": False,
            }
            if self._extra_body.get("chat_template_kwargs") is not None:
                base["chat_template_kwargs"] = self._extra_body["chat_template_kwargs"]
            try:
                closed, _ = await self.pool.post("/tokenize", base, upstream=upstream, at_root=True)
                unclosed, _ = await self.pool.post(
                    "/tokenize", {**base, "continue_final_message": True}, upstream=upstream, at_root=True
                )
                self._closing = closing_tokens(
                    prompt_tokens_from(closed, "tokenize"), prompt_tokens_from(unclosed, "tokenize")
                )
            except (APIError, UpstreamFormatError, SpliceError) as exc:
                if isinstance(exc, APIError) and exc.status >= 500:
                    return []  # the upstream is failing right now: ask again at the next splice
                self._closing = []
                logger.warning(
                    "could not learn the chat template's end-of-turn token from %s (%s); splicing "
                    "a cut-off turn needs end_of_turn_token_ids or an earlier finished generation",
                    upstream.base_url,
                    exc,
                )
            return self._closing

    def _learn_eot(self, choice: dict[str, Any], ids: list[int]) -> None:
        """A generation that stopped on the model's own stop token (no stop string) ends
        with the template's end-of-turn id: remember it for splicing cut-off generations."""
        if (
            self._configured_eot
            or not ids
            or choice.get("finish_reason") not in ("stop", "tool_calls")
            or isinstance(choice.get("stop_reason"), str)
            or len(self._learned_eot) >= _MAX_LEARNED_EOT
        ):
            return
        self._learned_eot.add(ids[-1])

    def _finalize(self, body: dict[str, Any]) -> dict[str, Any]:
        """extra_body under the request, sampling_overrides over it, then the token flags."""
        if self._extra_body:
            body = {**self._extra_body, **body}
        if self._overrides:
            body.update(self._overrides)
        body["model"] = self.config.model
        if self.token_mode:
            body["logprobs"] = True
            body["top_logprobs"] = 0
            body["return_tokens_as_token_ids"] = True
            if self.inline_ids:
                body["return_token_ids"] = True
        return body

    def _tokenize_body(self, body: dict[str, Any]) -> dict[str, Any]:
        tokenize: dict[str, Any] = {"model": self.config.model, "messages": body["messages"]}
        for key in ("tools", "chat_template_kwargs"):
            if body.get(key) is not None:
                tokenize[key] = body[key]
        return tokenize

    async def _generate(
        self, body: dict[str, Any], session_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if not self.token_mode:
            chat, _ = await self.pool.post(_CHAT, body, session_id=session_id)
            return chat, None
        carried = carried_tokens(body["messages"])
        report: dict[str, Any] | None = None
        if carried is not None and self.prefix_mode != "off":
            chat, prompt_ids, used, report = await self._generate_spliced(body, session_id, carried)
        elif self.inline_ids:
            chat, used = await self.pool.post(_CHAT, body, session_id=session_id)
            prompt_ids = prompt_tokens_from(chat, "inline")
        else:
            chat, prompt_ids, used = await self._generate_with_tokenize(body, session_id)
        choice = first_choice(chat)
        ids, log_probs = generation_tokens(choice)
        self._learn_eot(choice, ids)
        token_info: dict[str, Any] = {
            "prompt_token_ids": prompt_ids,
            "generation_token_ids": ids,
            "generation_log_probs": log_probs,
        }
        if carried is not None:
            if report is None:
                report = drift_report(carried, prompt_ids, spliced=False, note=None)
            self._count(used, report)
            token_info["token_drift"] = report
        return chat, token_info

    def _count(self, upstream: Upstream, report: dict[str, Any]) -> None:
        counts = self._drift.get(upstream.index)
        if counts is None:
            counts = self._drift[upstream.index] = DriftCounts()
        counts.measured += 1
        if report["extends_carried_tokens"]:
            counts.extends += 1
        else:
            counts.diverged += 1
        if report["spliced"]:
            counts.spliced += 1
        elif self.prefix_mode != "off":
            counts.fallbacks += 1

    async def _generate_with_tokenize(
        self, body: dict[str, Any], session_id: str | None
    ) -> tuple[dict[str, Any], list[int], Upstream]:
        # /tokenize goes out beside the generation, on the same upstream, as one write on
        # an idle connection (no task); if that was not possible or did not work, or the
        # generation moved to another upstream, ask the one that answered afterwards.
        upstream = self.pool.route(session_id)
        tokenize_body = self._tokenize_body(body)
        pending = self.pool.post_nowait("/tokenize", tokenize_body, upstream, at_root=True)
        try:
            chat, used = await self.pool.post(_CHAT, body, session_id=session_id, upstream=upstream)
        except BaseException:
            if pending is not None:
                self.pool.abandon(pending)
            raise
        tokenized = None
        if pending is not None:
            if used is upstream:
                tokenized = await self.pool.nowait_result(pending)
            else:
                self.pool.abandon(pending)
        if tokenized is None:
            tokenized, _ = await self.pool.post("/tokenize", tokenize_body, upstream=used, at_root=True)
        return chat, prompt_tokens_from(tokenized, "tokenize"), used

    def _not_spliced(self, why: str) -> str:
        if self.prefix_mode == "required":
            raise APIError(502, f"prefix_token_ids is 'required' but the prompt could not be spliced: {why}")
        return why

    async def splice_plan(
        self, body: dict[str, Any], session_id: str | None, carried: CarriedTokens
    ) -> tuple[list[int] | None, list[int], str | None, Upstream]:
        """(the spliced prompt or None, the template's rendering, why not, the upstream asked).

        The prompt = the carried ids + the template's tokens after that turn, to be sent as
        `kv_transfer_params.prompt_token_ids`. The /tokenize this needs (before the generation,
        for the tail) replaces the one token mode makes anyway."""
        tokenized, upstream = await self.pool.post(
            "/tokenize", self._tokenize_body(body), session_id=session_id, at_root=True
        )
        rendered = prompt_tokens_from(tokenized, "tokenize")
        if self._honours_prefix.get(upstream.index) is False:
            return None, rendered, self._not_spliced(_IGNORED), upstream
        closing = None if self._configured_eot else await self._template_closing(upstream)
        try:
            return (
                splice(carried, rendered, self._eot_ids(carried), closing or None),
                rendered,
                None,
                upstream,
            )
        except SpliceError as exc:
            return None, rendered, self._not_spliced(str(exc)), upstream

    @staticmethod
    def with_prompt(body: dict[str, Any], prompt: list[int]) -> dict[str, Any]:
        kv = body.get("kv_transfer_params")
        return {
            **body,
            "kv_transfer_params": {**kv, "prompt_token_ids": prompt}
            if isinstance(kv, dict)
            else {"prompt_token_ids": prompt},
            "return_token_ids": True,
        }

    def spliced_outcome(
        self,
        carried: CarriedTokens,
        prompt: list[int],
        returned: Any,
        used: Upstream,
        *,
        rendered: list[int] | None = None,
        streaming: bool = False,
    ) -> dict[str, Any]:
        """The drift report once the upstream answered a spliced request with `returned` prompt
        ids (`rendered`: what to measure when it returned none)."""
        if returned == prompt:
            self._honours_prefix[used.index] = True
            return drift_report(carried, prompt, spliced=True, note=None)
        if self._honours_prefix.get(used.index) is not False:
            self._honours_prefix[used.index] = False
            logger.warning(
                "upstream %s returned other prompt ids than the kv_transfer_params.prompt_token_ids sent: %s%s",
                used.base_url,
                _IGNORED,
                "" if self.prefix_mode == "required" else "; falling back to plain rendering for it",
            )
        if streaming and self.prefix_mode == "required":  # the answer is out already: a note, not a failure
            note = f"prefix_token_ids is 'required' but the prompt could not be spliced: {_IGNORED}"
        else:
            note = self._not_spliced(_IGNORED)
        return drift_report(
            carried, returned if isinstance(returned, list) else prompt, spliced=False, note=note
        )

    async def _generate_spliced(
        self, body: dict[str, Any], session_id: str | None, carried: CarriedTokens
    ) -> tuple[dict[str, Any], list[int], Upstream, dict[str, Any]]:
        prompt, rendered, note, upstream = await self.splice_plan(body, session_id, carried)
        if prompt is None:
            chat, used = await self.pool.post(_CHAT, body, session_id=session_id, upstream=upstream)
            prompt_ids = (
                rendered
                if used is upstream
                else prompt_tokens_from(
                    (
                        await self.pool.post(
                            "/tokenize", self._tokenize_body(body), upstream=used, at_root=True
                        )
                    )[0],
                    "tokenize",
                )
            )
            return chat, prompt_ids, used, drift_report(carried, prompt_ids, spliced=False, note=note)
        chat, used = await self.pool.post(
            _CHAT, self.with_prompt(body, prompt), session_id=session_id, upstream=upstream
        )
        returned = chat.get("prompt_token_ids")
        report = self.spliced_outcome(carried, prompt, returned, used, rendered=rendered)
        prompt_ids = prompt if report["spliced"] else (returned if isinstance(returned, list) else rendered)
        return chat, prompt_ids, used, report

    async def responses(self, params: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        try:
            body = self._finalize(responses_to_chat(params, self.options))
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        try:
            chat, token_info = await self._generate(body, session_id)
            return chat_to_response(
                chat,
                params,
                model=self.config.model,
                uses_reasoning_parser=self.config.uses_reasoning_parser,
                token_info=token_info,
            )
        except ContextLengthExceeded:
            self.context_length_fallbacks += 1
            return empty_response(params, self.config.model)
        except UpstreamFormatError as exc:
            raise APIError(502, exc.message) from None

    @staticmethod
    def check_messages(body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' is required and must be a non-empty list", param="messages")

    async def chat_completions(self, body: dict[str, Any], session_id: str | None) -> dict[str, Any]:
        """The non-streaming answer (`stream: true` goes to `streaming.StreamingServing`)."""
        self.check_messages(body)
        if body.get("stream") not in (None, False):
            raise APIError(400, "'stream' must be true or false", param="stream")
        try:
            upstream_messages = chat_messages_for_upstream(body["messages"], self.options)
        except ConversionError as exc:
            raise APIError(400, exc.message, param=exc.param) from None
        body = self._finalize({**body, "messages": upstream_messages})
        try:
            chat, token_info = await self._generate(body, session_id)
            return chat_completion_for_caller(
                chat,
                model=self.config.model,
                uses_reasoning_parser=self.config.uses_reasoning_parser,
                token_info=token_info,
            )
        except ContextLengthExceeded:
            self.context_length_fallbacks += 1
            return empty_chat_completion(self.config.model)
        except UpstreamFormatError as exc:
            raise APIError(502, exc.message) from None
