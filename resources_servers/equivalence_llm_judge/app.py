"""equivalence_llm_judge: an LLM judge decides whether the model's answer equals the expected one.

The judge is asked with a prompt template (a file, by default `prompt_templates/
equivalence_llm_judge.txt`, or an inline `judge_prompt_template`) and must end its reply with a
verdict label: `judge_equal_label` (default `[[A=B]]`) or `judge_not_equal_label` (`[[A!=B]]`);
when it writes several, the last one counts. The config keys are NeMo Gym's, so its
`equivalence_llm_judge` configs run here unchanged.

Passes, for one rollout:
1. the expected answer against the (optionally regex-extracted) final answer;
2. if that says equal and `check_twice_swap` is on: the same with the answers swapped, which
   cancels the judge's position bias (disagreement gives `reward_if_swap_fails`);
   if it says not equal, the row has a per-record regex (`template_metadata.output_regex`) and
   `check_full_generation_on_fail` is on: the whole final answer instead of the extract, for
   `reward_if_full_generation_succeeds` (the regex may have cut the answer wrongly).
Empty final answers, and answers longer than `max_answer_chars`, score 0 without a judge call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import string
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ResourcesSeedSessionRequest,
    ResourcesSeedSessionResponse,
    SimpleResourcesServer,
)
from nemo_gym.config import PROJECT_ROOT, ConfigError
from nemo_gym.config_types import ModelServerRef
from nemo_gym.http.bodies import json_object
from nemo_gym.http.server_client import message_from_body
from nemo_gym.openai_utils import NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.server.errors import APIError
from nemo_gym.verifier_fixture import VerifierFixture
from resources_servers.equivalence_llm_judge.fixture import verify_with_canned_judge

logger = logging.getLogger(__name__)

EQUAL, NOT_EQUAL = "[[A=B]]", "[[A!=B]]"
SERVER_DIR = Path(__file__).resolve().parent
DEFAULT_TEMPLATE_FPATH = "prompt_templates/equivalence_llm_judge.txt"
# Placeholders a template may use. {answer_a}/{answer_b} are our older names for
# {expected_answer}/{generated_answer} (A is the reference side, B the side being graded).
PLACEHOLDERS = ("question", "expected_answer", "generated_answer", "answer_a", "answer_b")
# Names of the judge-output problems recorded per evaluation (and aggregated as rates).
ISSUE_RATE = "judgement_parsing_issue_rate"
_REGEX_FLAGS = re.MULTILINE | re.DOTALL


class EquivalenceJudgeConfig(BaseResourcesServerConfig):
    judge_model_server: ModelServerRef = Field(
        default_factory=lambda: ModelServerRef(type="responses_api_models", name="judge_model")
    )
    # Sent with every judge call; `input` is replaced by the judge prompt.
    judge_responses_create_params: dict[str, Any] = Field(
        default_factory=lambda: {"max_output_tokens": 1024, "temperature": 0.0}
    )
    # Judge calls in flight at once from this process; None for no limit.
    judge_endpoint_max_concurrency: int | None = Field(default=64, ge=1)
    judge_system_message: str | None = None
    # An inline template wins over the file; the file path is relative to this server's folder.
    judge_prompt_template: str | None = None
    judge_prompt_template_fpath: str = DEFAULT_TEMPLATE_FPATH
    judge_equal_label: str = Field(default=EQUAL, min_length=1)
    judge_not_equal_label: str = Field(default=NOT_EQUAL, min_length=1)
    # Regexes (MULTILINE | DOTALL) applied to the last user message / last assistant message:
    # the last match counts, as its first non-empty group, else the whole match.
    question_extract_regex: str | None = None
    response_extract_regex: str | None = None
    # Our older name for response_extract_regex (used when that is unset).
    answer_extraction_regex: str | None = None
    # What the judge is shown when a regex matches but captures only empty text.
    msg_extraction_failure: str = "[NO VALID ANSWER EXTRACTED]"
    # Final answers longer than this score 0 without a judge call (reasoning is not counted).
    max_answer_chars: int | None = Field(default=None, gt=0)
    check_twice_swap: bool = False
    reward_if_swap_fails: float = 0.0
    # Rows may carry their own answer regex in template_metadata.output_regex.
    use_per_record_regex: bool = True
    # With a per-record regex: expected answers longer than this are compared whole (no
    # extraction, no second pass). None disables.
    extraction_length_threshold: int | None = Field(default=120, ge=0)
    check_full_generation_on_fail: bool = True
    reward_if_full_generation_succeeds: float = 0.5
    # Descriptive only (NeMo Gym's environment catalogue).
    domain: str | None = None
    verified: bool | None = None
    description: str | None = None
    value: str | None = None

    @field_validator("judge_responses_create_params", mode="before")
    @classmethod
    def _check_create_params(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_unset=True)
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of /v1/responses parameters")
        # The same keys a /v1/responses body accepts (typos fail here, not on every call).
        NeMoGymResponseCreateParamsNonStreaming.model_validate({**value, "input": []})
        return {k: v for k, v in value.items() if k != "input"}

    @field_validator("question_extract_regex", "response_extract_regex", "answer_extraction_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value, _REGEX_FLAGS)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value or None


class EquivalenceJudgeVerifyRequest(BaseVerifyRequest):
    """A dataset row plus the policy's response. Fields NeMo Gym rows carry are typed; the
    rest pass through."""

    model_config = ConfigDict(extra="allow")

    uuid: str | int | None = None
    question: Any = None
    expected_answer: Any = None
    options: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    template_metadata: Any = None


class JudgeEvaluation(BaseModel):
    responses_create_params: dict[str, Any]
    response: dict[str, Any] | None = None
    # The label the verdict came from (NeMo Gym's field), and ours: "equal" / "not_equal" / None.
    verdict_label: str | None = None
    verdict: str | None = None
    judgement_parsing_issues: list[str] = Field(default_factory=list)


class EquivalenceJudgeVerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(extra="allow")

    expected_answer: str
    judge_evaluations: list[JudgeEvaluation]


# ---- text helpers (work on pydantic items and plain dicts alike) -----------------------------
def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = [_get(part, "text") for part in content or []]
    return "\n".join(t for t in texts if isinstance(t, str))


def last_user_text(params: Any) -> str:
    items = _get(params, "input")
    if isinstance(items, str):
        return items.strip()
    for item in reversed(items or []):
        if _get(item, "role") == "user" and (_get(item, "type") or "message") == "message":
            text = _text_of(_get(item, "content")).strip()
            if text:
                return text
    return ""


def last_assistant_text(response: Any) -> str:
    """Text of the last assistant message (blocks joined by newlines); reasoning is not included."""
    for item in reversed(_get(response, "output") or []):
        if _get(item, "type") == "message" and _get(item, "role") == "assistant":
            return _text_of(_get(item, "content")).strip()
    return ""


def regex_extract(text: str, pattern: str) -> str | None:
    """The last match's first non-empty group (else the whole match), stripped; None: no match."""
    try:
        matches = list(re.finditer(pattern, text, _REGEX_FLAGS))
    except re.error:
        logger.warning("ignoring an invalid answer regex: %r", pattern)
        return None
    if not matches:
        return None
    last = matches[-1]
    for group in last.groups():
        if group and group.strip():
            return group.strip()
    return last.group(0).strip()


def find_labels(text: str, equal_label: str = EQUAL, not_equal_label: str = NOT_EQUAL) -> list[str]:
    """Verdict labels in `text`, in order, without overlaps. Where both start at one place the
    longer wins, so `INCORRECT` is never also read as `CORRECT`."""
    labels = sorted({equal_label, not_equal_label} - {""}, key=len, reverse=True)
    if not labels:
        return []
    pattern = "|".join(re.escape(label) for label in labels)
    return [m.group(0) for m in re.finditer(pattern, text)]


def parse_verdict(text: str, equal_label: str = EQUAL, not_equal_label: str = NOT_EQUAL) -> str | None:
    """'equal', 'not_equal', or None when there is no label; the last label written counts."""
    labels = find_labels(text, equal_label, not_equal_label)
    if not labels:
        return None
    return "equal" if labels[-1] == equal_label else "not_equal"


def parsing_issues(labels: list[str], has_text: bool, truncated: bool) -> list[str]:
    issues = []
    if not labels and truncated:
        issues.append("truncated_judge_output")
    if not has_text:
        issues.append("unparseable_judge_output")
    elif not labels:
        issues.append("no_verdict")
    else:
        counts = {label: labels.count(label) for label in set(labels)}
        if len(counts) > 1:
            issues.append("conflicting_verdicts")
        if max(counts.values()) > 1:
            issues.append("repeated_verdict")
    return issues


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def expected_answer_of(body: Any) -> str:
    """The row's expected answer as a string (also from metadata.expected_answer); 400 without one."""
    value = _get(body, "expected_answer")
    metadata = _get(body, "metadata")
    if (value is None or value == "") and isinstance(metadata, dict):
        value = metadata.get("expected_answer")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        if value is None:
            message = "this environment needs 'expected_answer' in every row; this row has none"
        else:
            message = f"'expected_answer' must be a string, got {type(value).__name__}"
        raise APIError(400, message, param="expected_answer")
    value = str(value)
    if not value.strip():
        raise APIError(400, "'expected_answer' is empty in this row", param="expected_answer")
    return value


class EquivalenceLLMJudge(SimpleResourcesServer):
    config: EquivalenceJudgeConfig
    ray_enabled = False

    _template: str = PrivateAttr(default="")
    _limit: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        cfg = self.config
        if cfg.judge_equal_label == cfg.judge_not_equal_label:
            raise ConfigError("must differ from judge_not_equal_label", key=self._key("judge_equal_label"))
        self._template = self._load_template()
        limit = cfg.judge_endpoint_max_concurrency
        self._limit = asyncio.Semaphore(limit) if limit is not None else nullcontext()

    # ---- config ------------------------------------------------------------------------
    def _key(self, field: str) -> str:
        """The dotted config key of one of our fields (with the instance, once ng_run named it)."""
        if not self.config.name:
            return field
        folder = Path(inspect.getfile(type(self))).resolve().parent.name
        return f"{self.config.name}.resources_servers.{folder}.{field}"

    def _template_candidates(self, fpath: str) -> list[Path]:
        path = Path(fpath).expanduser()
        if path.is_absolute():
            return [path]
        bases = [Path(inspect.getfile(type(self))).resolve().parent, SERVER_DIR, PROJECT_ROOT, Path.cwd()]
        return list(dict.fromkeys(base / path for base in bases))

    def _load_template(self) -> str:
        cfg = self.config
        if cfg.judge_prompt_template is not None:
            template, key = cfg.judge_prompt_template, self._key("judge_prompt_template")
        else:
            key = self._key("judge_prompt_template_fpath")
            candidates = self._template_candidates(cfg.judge_prompt_template_fpath)
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                tried = ", ".join(str(p) for p in candidates)
                raise ConfigError(f"judge prompt template file not found (looked at {tried})", key=key)
            template = found.read_text(encoding="utf-8").strip()
        fields = template_fields(template) if template else set()
        unknown = fields - set(PLACEHOLDERS)
        try:
            if unknown:
                raise ValueError(
                    f"unknown placeholder(s) {', '.join('{' + f + '}' for f in sorted(unknown))}"
                )
            rendered = template.format(**dict.fromkeys(PLACEHOLDERS, ""))
        except (ValueError, IndexError, KeyError) as exc:
            raise ConfigError(
                f"judge prompt template does not format: {exc}. Placeholders are "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write literal braces as {{{{ and }}}}",
                key=key,
            ) from None
        if not fields & {"generated_answer", "answer_b"}:
            raise ConfigError(
                "judge prompt template never shows the judge the answer: use {generated_answer}", key=key
            )
        for label in (cfg.judge_equal_label, cfg.judge_not_equal_label):
            if label not in rendered and label not in (cfg.judge_system_message or ""):
                logger.warning("the judge prompt never mentions the verdict label %r", label)
        return template

    def validate_config(self, key_prefix: str) -> None:
        name = self.config.judge_model_server.name
        context = self.context
        if context is not None and name not in context.global_config:
            raise ConfigError(
                f"no server instance named {name!r} in the running config (judge_model_server.name)",
                key=f"{key_prefix}.judge_model_server.name",
            )

    @property
    def prompt_template(self) -> str:
        return self._template

    # ---- routes ------------------------------------------------------------------------
    async def seed_session(
        self, body: ResourcesSeedSessionRequest | BaseSeedSessionRequest
    ) -> ResourcesSeedSessionResponse | BaseSeedSessionResponse:
        # A row without an expected answer fails here, before the policy spends a rollout on it.
        if isinstance(body, ResourcesSeedSessionRequest):
            # An environment server's seed: the row's fields are its task_data.
            expected_answer_of(body.task_data)
            return ResourcesSeedSessionResponse(resources_session_id=body.resources_session_id)
        row = body.model_extra or {}
        if "responses_create_params" in row:
            expected_answer_of(row)
        return BaseSeedSessionResponse()

    async def verify(self, body: EquivalenceJudgeVerifyRequest) -> EquivalenceJudgeVerifyResponse:
        cfg = self.config
        expected = expected_answer_of(body)
        answer = last_assistant_text(body.response)
        if not answer:
            return self._result(body, expected, 0.0, [], failure_reason="empty_final_answer")
        if cfg.max_answer_chars is not None and len(answer) > cfg.max_answer_chars:
            reason = f"final_answer_too_long: {len(answer)} characters exceeds {cfg.max_answer_chars}"
            return self._result(body, expected, 0.0, [], failure_reason=reason)

        question = last_user_text(body.responses_create_params)
        if not question and isinstance(body.question, str):
            question = body.question.strip()
        if cfg.question_extract_regex and question:
            question = regex_extract(question, cfg.question_extract_regex) or question

        record_regex = None
        if cfg.use_per_record_regex and isinstance(body.template_metadata, dict):
            candidate = body.template_metadata.get("output_regex")
            record_regex = candidate if isinstance(candidate, str) and candidate else None
        # With a per-record regex and a long expected answer, the whole answer is compared once.
        whole_only = bool(
            record_regex
            and cfg.extraction_length_threshold is not None
            and len(expected) > cfg.extraction_length_threshold
        )
        regex = (
            None
            if whole_only
            else (record_regex or cfg.response_extract_regex or cfg.answer_extraction_regex)
        )
        generated = self._extract(answer, regex)

        first = await self._judge(question, expected, generated)
        evaluations = [first]
        if first.verdict == "equal":
            reward = 1.0
            if cfg.check_twice_swap and not whole_only:
                swapped = await self._judge(question, generated, expected)
                evaluations.append(swapped)
                reward = 1.0 if swapped.verdict == "equal" else cfg.reward_if_swap_fails
        else:
            reward = 0.0
            if record_regex and cfg.check_full_generation_on_fail and not whole_only and generated != answer:
                whole = await self._judge(question, expected, answer)
                evaluations.append(whole)
                if whole.verdict == "equal":
                    reward = cfg.reward_if_full_generation_succeeds
        return self._result(body, expected, reward, evaluations)

    # ---- helpers -----------------------------------------------------------------------
    def _extract(self, answer: str, regex: str | None) -> str:
        if not regex:
            return answer
        extracted = regex_extract(answer, regex)
        if extracted is None:  # no match: the judge sees the whole answer
            return answer
        return extracted or self.config.msg_extraction_failure

    def render_prompt(self, question: str, expected_answer: str, generated_answer: str) -> str:
        return self._template.format(
            question=question,
            expected_answer=expected_answer,
            generated_answer=generated_answer,
            answer_a=expected_answer,
            answer_b=generated_answer,
        )

    def judge_request(self, question: str, expected_answer: str, generated_answer: str) -> dict[str, Any]:
        cfg = self.config
        messages = []
        if cfg.judge_system_message:
            messages.append({"role": "system", "content": cfg.judge_system_message})
        messages.append(
            {"role": "user", "content": self.render_prompt(question, expected_answer, generated_answer)}
        )
        return {**cfg.judge_responses_create_params, "input": messages}

    async def _judge(self, question: str, expected_answer: str, generated_answer: str) -> JudgeEvaluation:
        cfg = self.config
        name = cfg.judge_model_server.name
        params = self.judge_request(question, expected_answer, generated_answer)
        async with self._limit:
            try:
                response = await self.server_client.post(
                    server_name=name, url_path="/v1/responses", json=params
                )
                content = await response.read()
            except aiohttp.ClientError as exc:
                raise APIError(
                    502, f"could not reach the judge model server {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            except KeyError as exc:  # the judge instance is not in the running config
                raise APIError(500, f"judge model server: {exc.args[0]}") from None
        if response.status >= 400:
            raise APIError(
                502,
                f"judge model server {name!r} returned HTTP {response.status}: {message_from_body(content, 500)}",
            )
        data = json_object(content)
        if data is None:
            raise APIError(
                502, f"judge model server {name!r} answered with something other than a JSON response object"
            )
        text = last_assistant_text(data)
        labels = find_labels(text, cfg.judge_equal_label, cfg.judge_not_equal_label)
        label = labels[-1] if labels else None
        return JudgeEvaluation(
            responses_create_params=params,
            response=data,
            verdict_label=label,
            verdict=None if label is None else ("equal" if label == cfg.judge_equal_label else "not_equal"),
            judgement_parsing_issues=parsing_issues(labels, bool(text), data.get("status") == "incomplete"),
        )

    def _result(
        self,
        body: EquivalenceJudgeVerifyRequest,
        expected: str,
        reward: float,
        evaluations: list[JudgeEvaluation],
        failure_reason: str | None = None,
    ) -> EquivalenceJudgeVerifyResponse:
        row = body.model_dump()
        for key in ("expected_answer", "reward", "judge_evaluations"):
            row.pop(key, None)
        if failure_reason is not None:
            row["failure_reason"] = failure_reason
        return EquivalenceJudgeVerifyResponse(
            **row, reward=reward, expected_answer=expected, judge_evaluations=evaluations
        )

    # ---- metrics -----------------------------------------------------------------------
    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """How often the judge's output had problems (no label, conflicting labels, ...), per rollout."""
        judged = with_issues = 0
        counts: dict[str, int] = {}
        for task in tasks:
            for rollout in task:
                evaluations = [e for e in rollout.get("judge_evaluations") or [] if isinstance(e, dict)]
                if not evaluations:
                    continue
                issues: set[str] = set()
                for evaluation in evaluations:
                    issues.update(evaluation.get("judgement_parsing_issues") or [])
                judged += 1
                with_issues += bool(issues)
                for issue in issues:
                    counts[issue] = counts.get(issue, 0) + 1
        if not judged:
            return {}
        metrics: dict[str, Any] = {ISSUE_RATE: with_issues / judged}
        for issue in sorted(counts):
            metrics[f"{ISSUE_RATE}/{issue}"] = counts[issue] / judged
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        key = super().get_key_metrics(agent_metrics)
        if ISSUE_RATE in agent_metrics:
            key[ISSUE_RATE] = agent_metrics[ISSUE_RATE]
        return key


# NeMo Gym's names for the classes above.
LLMJudgeResourcesServerConfig = EquivalenceJudgeConfig
LLMJudgeVerifyRequest = EquivalenceJudgeVerifyRequest
LLMJudgeVerifyResponse = EquivalenceJudgeVerifyResponse
LLMJudgeResourcesServer = EquivalenceLLMJudge


class FixtureVerifyRequest(EquivalenceJudgeVerifyRequest):
    """A contract case's request: a row, the policy's response, and the judge's canned reply."""

    fixture_judge_text: str = ""


# `gym env test`'s contract cases: scored with canned judge replies, no judge server needed.
VERIFIER_FIXTURE = VerifierFixture(
    server_factory=lambda: EquivalenceLLMJudge(config=EquivalenceJudgeConfig(name="equivalence_llm_judge")),
    request_model=FixtureVerifyRequest,
    cases_path=SERVER_DIR / "tests" / "verifier_cases.jsonl",
    invoke=verify_with_canned_judge,
)


if __name__ == "__main__":
    EquivalenceLLMJudge.run_webserver()
