"""equivalence_llm_judge: an LLM judge decides whether the model's answer equals the expected one.

The judge must end with a verdict label, `[[A=B]]` (equivalent) or `[[A!=B]]`. With
`check_twice_swap`, a second call with the two answers swapped must agree, which cancels
the judge's position bias; the reward is 1.0 only if every check says equivalent.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from pydantic import Field

from nemo_gym.base_resources_server import BaseResourcesServerConfig, BaseVerifyRequest, SimpleResourcesServer
from nemo_gym.http.server_client import error_message
from nemo_gym.server.errors import APIError
from responses_api_agents.simple_agent.app import ServerRef

EQUAL, NOT_EQUAL = "[[A=B]]", "[[A!=B]]"
_LABEL = re.compile(r"\[\[A(!?)=B\]\]")

JUDGE_PROMPT = """You grade answers. Below are a question and two answers to it, A and B.
Decide whether A and B say the same thing: the same final result (numbers, names, choices), even if
worded, formatted or explained differently. Extra explanation in one answer does not matter; a
different or missing final result does.

<question>
{question}
</question>

<answer_a>
{answer_a}
</answer_a>

<answer_b>
{answer_b}
</answer_b>

Think briefly, then finish your reply with exactly one verdict label on its own line:
[[A=B]] if the answers are equivalent, or [[A!=B]] if they are not."""


class EquivalenceJudgeConfig(BaseResourcesServerConfig):
    judge_model_server: ServerRef = Field(
        default_factory=lambda: ServerRef(type="responses_api_models", name="judge_model")
    )
    judge_responses_create_params: dict[str, Any] = Field(
        default_factory=lambda: {"max_output_tokens": 1024, "temperature": 0.0}
    )
    judge_prompt_template: str = JUDGE_PROMPT
    check_twice_swap: bool = False
    answer_extraction_regex: str | None = None


def parse_verdict(text: str) -> str | None:
    """'equal', 'not_equal', or None when no label; with both labels the last one is the verdict."""
    labels = _LABEL.findall(text)
    if not labels:
        return None
    return "not_equal" if labels[-1] == "!" else "equal"


def last_user_text(params: dict[str, Any]) -> str:
    items = params.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message":
            return _text_of(item.get("content"))
    return ""


def last_assistant_text(response: dict[str, Any]) -> str:
    for item in reversed(response.get("output") or []):
        if item.get("type") == "message" and item.get("role") == "assistant":
            return _text_of(item.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


class EquivalenceLLMJudge(SimpleResourcesServer):
    config_class = EquivalenceJudgeConfig
    config: EquivalenceJudgeConfig

    def extract_answer(self, text: str) -> str:
        if self.config.answer_extraction_regex:
            match = re.search(self.config.answer_extraction_regex, text, re.DOTALL)
            if match:
                return match.group(1) if match.groups() else match.group(0)
        return text

    async def _judge(self, question: str, answer_a: str, answer_b: str) -> dict[str, Any]:
        prompt = self.config.judge_prompt_template.format(
            question=question, answer_a=answer_a, answer_b=answer_b
        )
        params = {**self.config.judge_responses_create_params, "input": [{"role": "user", "content": prompt}]}
        response = await self.server_client.post(
            self.config.judge_model_server.name, "/v1/responses", json=params
        )
        if response.status_code >= 400:
            raise APIError(
                502,
                f"judge model {self.config.judge_model_server.name!r} returned HTTP {response.status_code}: {error_message(response, 500)}",
            )
        data = response.json()
        return {
            "responses_create_params": params,
            "response": data,
            "verdict": parse_verdict(last_assistant_text(data)),
        }

    async def verify(self, request: Request, body: BaseVerifyRequest) -> dict[str, Any]:
        extra = body.model_extra or {}
        expected = extra.get("expected_answer")
        if not isinstance(expected, str):
            raise APIError(
                400,
                "this environment needs 'expected_answer' (a string) in every row",
                param="expected_answer",
            )
        question = last_user_text(body.responses_create_params)
        generated = self.extract_answer(last_assistant_text(body.response))
        evaluations = [await self._judge(question, expected, generated)]
        if self.config.check_twice_swap and evaluations[0]["verdict"] == "equal":
            evaluations.append(await self._judge(question, generated, expected))
        reward = 1.0 if all(e["verdict"] == "equal" for e in evaluations) else 0.0
        return {
            **body.model_dump(),
            "reward": reward,
            "expected_answer": expected,
            "judge_evaluations": evaluations,
        }


if __name__ == "__main__":
    EquivalenceLLMJudge.run_webserver()
