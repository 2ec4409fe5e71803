"""equivalence_llm_judge against a scripted judge model on 127.0.0.1 (the production aiohttp
client path, no client mocks): verdicts, labels, passes, extraction, prompts and errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from nemo_gym.config import ConfigError
from nemo_gym.http.server_client import ServerClient, close_shared_client
from nemo_gym.server.context import RuntimeContext
from nemo_gym.testing.scripted_server import Answer, ScriptedServer
from resources_servers.equivalence_llm_judge.app import (
    EquivalenceJudgeConfig,
    EquivalenceJudgeVerifyRequest,
    EquivalenceLLMJudge,
    expected_answer_of,
    find_labels,
    parse_verdict,
)

HERE = Path(__file__).resolve().parent
SERVER_DIR = HERE.parent
REFERENCE_YAML = Path(
    "/work/ref/wheel/resources_servers/equivalence_llm_judge/configs/equivalence_llm_judge.yaml"
)
QUESTION = "Capital of France?"
EXACT = "Q={question}|E={expected_answer}|G={generated_answer}|A={answer_a}|B={answer_b} [[A=B]] [[A!=B]]"


# ---- pure parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("They match. [[A=B]]", "equal"),
        ("Different numbers.\n[[A!=B]]", "not_equal"),
        ("At first [[A!=B]] but on reflection [[A=B]]", "equal"),
        ("[[A=B]] no wait: [[A!=B]]", "not_equal"),
        ("I cannot decide.", None),
        ("[A=B]", None),
    ],
)
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("INCORRECT", ["INCORRECT"]),
        ("CORRECT", ["CORRECT"]),
        ("INCORRECT, no: CORRECT", ["INCORRECT", "CORRECT"]),
        ("CORRECTINCORRECT", ["CORRECT", "INCORRECT"]),
    ],
)
def test_overlapping_custom_labels_are_read_once(text: str, labels: list[str]) -> None:
    assert find_labels(text, "CORRECT", "INCORRECT") == labels
    assert parse_verdict(text, "CORRECT", "INCORRECT") == (
        "equal" if labels[-1] == "CORRECT" else "not_equal"
    )


# ---- the server against a scripted judge -------------------------------------------------------
def judge_reply(text: str, status: str = "completed") -> Answer:
    item = {
        "type": "message",
        "role": "assistant",
        "id": "m",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    body = {"id": "r", "object": "response", "status": status, "model": "judge-model", "output": [item]}
    return Answer(200, body)


def policy_response(*texts: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = [
        {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "thinking " * 50}]}
    ]
    if texts:
        output.append(
            {
                "type": "message",
                "role": "assistant",
                "id": "m",
                "status": "completed",
                "content": [{"type": "output_text", "text": t, "annotations": []} for t in texts],
            }
        )
    return {
        "id": "resp",
        "created_at": 0.0,
        "model": "policy",
        "object": "response",
        "output": output,
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
    }


def row(*answer: str, expected: Any = "Paris", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "responses_create_params": {
            "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
        },
        "response": policy_response(*answer),
        **extra,
    }
    if expected is not None:
        body["expected_answer"] = expected
    return body


@pytest.fixture
async def judge() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    async with server.running():
        yield server
    await close_shared_client()


def make_server(judge: ScriptedServer, **config: Any) -> EquivalenceLLMJudge:
    global_config = {"judge_model": {"responses_api_models": {"vllm_model": judge.address}}}
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="equivalence_llm_judge", session_secret="s"
    )
    server = EquivalenceLLMJudge(
        config=EquivalenceJudgeConfig(**config), server_client=ServerClient(global_config)
    )
    server.bind_context(context)
    server.validate_config("equivalence_llm_judge.resources_servers.equivalence_llm_judge")
    return server


async def post(
    judge: ScriptedServer,
    replies: list[Answer] | None,
    body: dict[str, Any],
    path: str = "/verify",
    **config: Any,
) -> httpx.Response:
    if replies is not None:
        judge.on("/v1/responses", replies)
    server = make_server(judge, **config)
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env") as client:
        return await client.post(path, json=body)


async def verify(
    judge: ScriptedServer, replies: list[Answer], body: dict[str, Any], **config: Any
) -> dict[str, Any]:
    r = await post(judge, replies, body, **config)
    assert r.status_code == 200, r.text
    return r.json()


def prompts(judge: ScriptedServer) -> list[str]:
    return [call.json["input"][-1]["content"] for call in judge.calls_to("/v1/responses")]


async def test_equal_gives_reward_one_and_records_the_call(judge: ScriptedServer) -> None:
    result = await verify(judge, [judge_reply("Same city. [[A=B]]")], row("It is Paris.", uuid="u-1"))
    assert result["reward"] == 1.0 and result["expected_answer"] == "Paris" and result["uuid"] == "u-1"
    (evaluation,) = result["judge_evaluations"]
    assert evaluation["verdict"] == "equal" and evaluation["verdict_label"] == "[[A=B]]"
    assert evaluation["judgement_parsing_issues"] == []
    assert evaluation["response"]["model"] == "judge-model"
    (call,) = judge.calls_to("/v1/responses")
    assert call.json == evaluation["responses_create_params"]
    assert call.json["max_output_tokens"] == 1024 and call.json["temperature"] == 0.0
    assert [m["role"] for m in call.json["input"]] == ["user"]
    prompt = call.json["input"][0]["content"]
    assert f"<question>\n{QUESTION}\n</question>" in prompt
    assert "<answer_a>\nParis\n</answer_a>" in prompt and "<answer_b>\nIt is Paris.\n</answer_b>" in prompt
    assert prompt.endswith("[[A=B]] if the answers are equivalent, or [[A!=B]] if they are not.")
    # The shipped template is the file, read from this server's folder.
    template = (SERVER_DIR / "prompt_templates/equivalence_llm_judge.txt").read_text().strip()
    assert prompt == template.format(
        question=QUESTION, expected_answer="Paris", generated_answer="It is Paris."
    )


async def test_placeholders_render_exactly_and_system_message(judge: ScriptedServer) -> None:
    await verify(
        judge,
        [judge_reply("[[A=B]]")] * 2,
        row("Paris!"),
        judge_prompt_template=EXACT,
        judge_system_message="You are a careful arbiter.",
        check_twice_swap=True,
    )
    first, swapped = (call.json["input"] for call in judge.calls_to("/v1/responses"))
    assert first == [
        {"role": "system", "content": "You are a careful arbiter."},
        {"role": "user", "content": f"Q={QUESTION}|E=Paris|G=Paris!|A=Paris|B=Paris! [[A=B]] [[A!=B]]"},
    ]
    assert swapped[1]["content"] == f"Q={QUESTION}|E=Paris!|G=Paris|A=Paris!|B=Paris [[A=B]] [[A!=B]]"


@pytest.mark.parametrize(
    ("reply", "reward", "label", "issues"),
    [
        ("[[A!=B]]", 0.0, "[[A!=B]]", []),
        ("No label at all", 0.0, None, ["no_verdict"]),
        ("[[A!=B]] ... [[A=B]]", 1.0, "[[A=B]]", ["conflicting_verdicts"]),
        ("[[A=B]] ... [[A!=B]]", 0.0, "[[A!=B]]", ["conflicting_verdicts"]),
        ("[[A=B]] [[A=B]]", 1.0, "[[A=B]]", ["repeated_verdict"]),
    ],
)
async def test_last_label_wins(
    judge: ScriptedServer, reply: str, reward: float, label: str | None, issues: list[str]
) -> None:
    result = await verify(judge, [judge_reply(reply)], row("Lyon"))
    assert result["reward"] == reward
    (evaluation,) = result["judge_evaluations"]
    assert evaluation["verdict_label"] == label and evaluation["judgement_parsing_issues"] == issues


async def test_truncated_judge_output_is_recorded(judge: ScriptedServer) -> None:
    result = await verify(judge, [judge_reply("Let me think", status="incomplete")], row("Lyon"))
    assert result["reward"] == 0.0
    assert result["judge_evaluations"][0]["judgement_parsing_issues"] == [
        "truncated_judge_output",
        "no_verdict",
    ]


@pytest.mark.parametrize(
    ("reply", "reward"), [("CORRECT", 1.0), ("INCORRECT", 0.0), ("INCORRECT... on reflection CORRECT", 1.0)]
)
async def test_custom_labels(judge: ScriptedServer, reply: str, reward: float) -> None:
    result = await verify(
        judge,
        [judge_reply(reply)],
        row("Paris"),
        judge_equal_label="CORRECT",
        judge_not_equal_label="INCORRECT",
        judge_prompt_template="{question} {expected_answer} {generated_answer}: CORRECT or INCORRECT?",
    )
    assert result["reward"] == reward
    assert result["judge_evaluations"][0]["verdict_label"] == reply.split()[-1]


async def test_swap_check(judge: ScriptedServer) -> None:
    result = await verify(
        judge,
        [judge_reply("[[A=B]]"), judge_reply("[[A!=B]]")],
        row("Paris!"),
        check_twice_swap=True,
        reward_if_swap_fails=-1.0,
    )
    assert result["reward"] == -1.0
    assert [e["verdict"] for e in result["judge_evaluations"]] == ["equal", "not_equal"]
    swapped = prompts(judge)[1]
    assert "<answer_a>\nParis!\n</answer_a>" in swapped and "<answer_b>\nParis\n</answer_b>" in swapped


async def test_swap_agreeing_and_not_needed(judge: ScriptedServer) -> None:
    result = await verify(judge, [judge_reply("[[A=B]]")] * 2, row("Paris"), check_twice_swap=True)
    assert result["reward"] == 1.0 and len(result["judge_evaluations"]) == 2
    judge.calls.clear()
    # A first not-equal verdict ends the check: no second call.
    result = await verify(judge, [judge_reply("[[A!=B]]")], row("Lyon"), check_twice_swap=True)
    assert result["reward"] == 0.0 and len(judge.calls) == 1


@pytest.mark.parametrize(
    ("config", "answer", "shown"),
    [
        # The last match counts, as its first non-empty group.
        ({"response_extract_regex": r"Answer:\s*(\w+)"}, "Answer: Lyon\n...\nAnswer: Paris", "Paris"),
        ({"response_extract_regex": r"(x)?Answer:\s*(\w+)"}, "Answer: Paris", "Paris"),
        # Without groups: the whole match.
        ({"response_extract_regex": r"Pa\w+"}, "I say Paris", "Paris"),
        # No match: the whole answer.
        ({"response_extract_regex": r"Answer:\s*(\w+)"}, "It is Paris.", "It is Paris."),
        # Groups that are all empty: the whole match.
        ({"response_extract_regex": r"\\boxed\{(.*?)\}"}, "so \\boxed{ }", "\\boxed{ }"),
        # A match of only empty text: the extraction-failure message.
        ({"response_extract_regex": r"(?=Paris)"}, "Paris", "[NO VALID ANSWER EXTRACTED]"),
        ({"response_extract_regex": r"\s*$", "msg_extraction_failure": "<none>"}, "Paris", "<none>"),
        # Our older key name.
        ({"answer_extraction_regex": r"Final answer:\s*(.+)"}, "Reasoning... Final answer: Paris", "Paris"),
    ],
)
async def test_answer_extraction(
    judge: ScriptedServer, config: dict[str, Any], answer: str, shown: str
) -> None:
    await verify(
        judge, [judge_reply("[[A=B]]")], row(answer), judge_prompt_template="{generated_answer}", **config
    )
    assert prompts(judge) == [shown]


async def test_question_extraction_and_blocks(judge: ScriptedServer) -> None:
    body = row("Paris")
    body["responses_create_params"]["input"][-1]["content"] = [
        {"type": "input_text", "text": "Answer briefly."},
        {"type": "input_text", "text": "Question: Capital of France?"},
    ]
    await verify(
        judge,
        [judge_reply("[[A=B]]")],
        body,
        judge_prompt_template="[{question}] {generated_answer}",
        question_extract_regex=r"^Question:\s*(.*)$",
    )
    body["responses_create_params"]["input"] = "Plain string input"
    await verify(
        judge, [judge_reply("[[A=B]]")], body, judge_prompt_template="[{question}] {generated_answer}"
    )
    assert prompts(judge) == ["[Capital of France?] Paris", "[Plain string input] Paris"]


async def test_answer_blocks_are_joined_and_reasoning_is_ignored(judge: ScriptedServer) -> None:
    await verify(
        judge, [judge_reply("[[A=B]]")], row("The answer", "is Paris"), judge_prompt_template="{answer_b}"
    )
    assert prompts(judge) == ["The answer\nis Paris"]


OPENQA = {"output_regex": r"\(\((.*?)\)\)"}


async def test_per_record_regex(judge: ScriptedServer) -> None:
    result = await verify(
        judge,
        [judge_reply("[[A=B]]")],
        row("Thinking... ((Paris))", template_metadata=OPENQA),
        judge_prompt_template="{generated_answer}",
        response_extract_regex=r"Answer: (\w+)",
    )
    assert result["reward"] == 1.0 and prompts(judge) == ["Paris"]
    assert result["template_metadata"] == OPENQA
    judge.calls.clear()
    await verify(
        judge,
        [judge_reply("[[A=B]]")],
        row("Thinking... ((Paris))", template_metadata=OPENQA),
        judge_prompt_template="{generated_answer}",
        use_per_record_regex=False,
    )
    assert prompts(judge) == ["Thinking... ((Paris))"]


async def test_full_generation_rescue(judge: ScriptedServer) -> None:
    result = await verify(
        judge,
        [judge_reply("[[A!=B]]"), judge_reply("[[A=B]]")],
        row("((Par)) ... the capital is Paris", template_metadata=OPENQA),
        judge_prompt_template="{generated_answer}",
        check_full_generation_on_fail=True,
        reward_if_full_generation_succeeds=0.5,
    )
    assert result["reward"] == 0.5 and len(result["judge_evaluations"]) == 2
    assert prompts(judge) == ["Par", "((Par)) ... the capital is Paris"]
    judge.calls.clear()
    # Off: one pass, reward 0.
    result = await verify(
        judge,
        [judge_reply("[[A!=B]]")],
        row("((Par))", template_metadata=OPENQA),
        check_full_generation_on_fail=False,
    )
    assert result["reward"] == 0.0 and len(judge.calls) == 1


async def test_long_expected_answers_are_compared_whole_once(judge: ScriptedServer) -> None:
    expected = "a long expected answer " * 5
    result = await verify(
        judge,
        [judge_reply("[[A=B]]")],
        row("((short)) and more", expected=expected, template_metadata=OPENQA),
        judge_prompt_template="{generated_answer}",
        extraction_length_threshold=50,
        check_twice_swap=True,
    )
    assert result["reward"] == 1.0 and prompts(judge) == ["((short)) and more"]


@pytest.mark.parametrize(
    ("body", "config", "reason"),
    [
        (row(), {}, "empty_final_answer"),
        (row("   "), {}, "empty_final_answer"),
        (row("x" * 11), {"max_answer_chars": 10}, "final_answer_too_long: 11 characters exceeds 10"),
    ],
)
async def test_answers_scored_zero_without_a_judge_call(
    judge: ScriptedServer, body: dict[str, Any], config: dict[str, Any], reason: str
) -> None:
    result = await verify(judge, [], body, **config)
    assert result["reward"] == 0.0 and result["failure_reason"] == reason
    assert result["judge_evaluations"] == [] and judge.calls == []


async def test_answer_limit_does_not_count_reasoning(judge: ScriptedServer) -> None:
    result = await verify(judge, [judge_reply("[[A=B]]")], row("Paris"), max_answer_chars=10)
    assert result["reward"] == 1.0


async def test_expected_answer_from_metadata_and_numbers(judge: ScriptedServer) -> None:
    await verify(
        judge,
        [judge_reply("[[A=B]]")],
        row("Paris", expected=None, metadata={"expected_answer": "Paris"}),
        judge_prompt_template="{expected_answer}|{generated_answer}",
    )
    result = await verify(
        judge, [judge_reply("[[A=B]]")], row("6", expected=6), judge_prompt_template="{answer_a}|{answer_b}"
    )
    assert result["expected_answer"] == "6"
    assert prompts(judge) == ["Paris|Paris", "6|6"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            row("Paris", expected=None),
            "this environment needs 'expected_answer' in every row; this row has none",
        ),
        (row("Paris", expected=""), "'expected_answer' is empty in this row"),
        (row("Paris", expected=["Paris"]), "'expected_answer' must be a string, got list"),
    ],
)
@pytest.mark.parametrize("path", ["/verify", "/seed_session"])
async def test_row_without_expected_answer_is_a_400(
    judge: ScriptedServer, body: dict[str, Any], message: str, path: str
) -> None:
    if path == "/seed_session":
        body = {k: v for k, v in body.items() if k != "response"}
    r = await post(judge, [], body, path=path)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "expected_answer",
            "code": None,
        }
    }
    assert judge.calls == []


async def test_seed_session_accepts_good_rows_and_bare_bodies(judge: ScriptedServer) -> None:
    for body in ({k: v for k, v in row("x").items() if k != "response"}, {}):
        r = await post(judge, [], body, path="/seed_session")
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("status", [500, 503])
async def test_judge_server_error_is_a_clear_502(judge: ScriptedServer, status: int) -> None:
    failure = Answer(status, {"error": {"message": "engine overloaded", "type": "server_error"}})
    r = await post(judge, [failure], row("Paris"))
    assert r.status_code == 502
    assert r.json()["error"] == {
        "message": f"judge model server 'judge_model' returned HTTP {status}: engine overloaded",
        "type": "server_error",
        "param": None,
        "code": None,
    }


async def test_judge_answer_that_is_not_json_is_a_502(judge: ScriptedServer) -> None:
    r = await post(judge, [Answer(200, "<html>proxy</html>")], row("Paris"))
    assert (
        r.status_code == 502 and "something other than a JSON response object" in r.json()["error"]["message"]
    )


async def test_unreachable_judge_is_a_502(judge: ScriptedServer) -> None:
    server = make_server(judge)
    server.server_client = ServerClient({"judge_model": {"responses_api_models": {"m": {"port": 1}}}})
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env") as client:
        r = await client.post("/verify", json=row("Paris"))
    assert r.status_code == 502
    assert r.json()["error"]["message"].startswith("could not reach the judge model server 'judge_model'")


async def test_concurrency_limit_is_a_semaphore(judge: ScriptedServer) -> None:
    server = make_server(judge, judge_endpoint_max_concurrency=3)
    assert server._limit._value == 3
    unlimited = make_server(judge, judge_endpoint_max_concurrency=None)
    async with unlimited._limit:  # a no-op context
        pass


def test_compute_metrics_counts_rollouts_with_issues(judge: ScriptedServer) -> None:
    server = make_server(judge)
    clean = {"judge_evaluations": [{"judgement_parsing_issues": []}]}
    bad = {
        "judge_evaluations": [{"judgement_parsing_issues": []}, {"judgement_parsing_issues": ["no_verdict"]}]
    }
    unjudged = {"judge_evaluations": []}
    assert server.compute_metrics([[clean, bad], [unjudged, clean]]) == {
        "judgement_parsing_issue_rate": 1 / 3,
        "judgement_parsing_issue_rate/no_verdict": 1 / 3,
    }
    assert server.compute_metrics([[unjudged]]) == {}


# ---- config -----------------------------------------------------------------------------------
def _block(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["equivalence_llm_judge"]["resources_servers"][
        "equivalence_llm_judge"
    ]


@pytest.mark.parametrize(
    "path",
    [
        HERE / "fixtures/nemo_gym_config.yaml",
        SERVER_DIR / "configs/equivalence_llm_judge.yaml",
        pytest.param(
            REFERENCE_YAML,
            marks=pytest.mark.skipif(not REFERENCE_YAML.exists(), reason="no NeMo Gym reference tree here"),
        ),
    ],
    ids=["nemo_gym_fixture", "ours", "nemo_gym_reference"],
)
def test_config_files_load(path: Path) -> None:
    config = EquivalenceJudgeConfig.model_validate(_block(path))
    server = EquivalenceLLMJudge(config=config, server_client=None)
    assert server.prompt_template.startswith("You grade answers.")
    assert "input" not in config.judge_responses_create_params


def test_nemo_gym_fixture_values() -> None:
    config = EquivalenceJudgeConfig.model_validate(_block(HERE / "fixtures/nemo_gym_config.yaml"))
    assert config.judge_model_server.name == "policy_model"
    assert config.judge_endpoint_max_concurrency == 8 and config.max_answer_chars == 100000
    assert (config.check_full_generation_on_fail, config.reward_if_full_generation_succeeds) == (False, 0.0)
    assert (config.domain, config.verified, config.value) == (
        "knowledge",
        False,
        "Better knowledge benchmarks",
    )


def test_defaults_are_nemo_gyms() -> None:
    config = EquivalenceJudgeConfig()
    assert config.judge_prompt_template_fpath == "prompt_templates/equivalence_llm_judge.txt"
    assert (config.judge_equal_label, config.judge_not_equal_label) == ("[[A=B]]", "[[A!=B]]")
    assert config.judge_endpoint_max_concurrency == 64
    assert config.msg_extraction_failure == "[NO VALID ANSWER EXTRACTED]"
    assert (config.use_per_record_regex, config.extraction_length_threshold) == (True, 120)
    assert (config.check_full_generation_on_fail, config.reward_if_full_generation_succeeds) == (True, 0.5)


def test_template_path_is_relative_to_the_server_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = EquivalenceLLMJudge(config=EquivalenceJudgeConfig(), server_client=None)
    assert "{generated_answer}" in server.prompt_template
    own = tmp_path / "mine.txt"
    own.write_text("Mine: {question} / {expected_answer} / {generated_answer}\n")
    server = EquivalenceLLMJudge(
        config=EquivalenceJudgeConfig(judge_prompt_template_fpath=str(own)), server_client=None
    )
    assert server.prompt_template == "Mine: {question} / {expected_answer} / {generated_answer}"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"judge_prompt_template_fpath": "prompt_templates/missing.txt"},
            "judge prompt template file not found",
        ),
        ({"judge_prompt_template": "{question} {answer}"}, "unknown placeholder(s) {answer}"),
        ({"judge_prompt_template": "\\boxed{} {generated_answer}"}, "write literal braces as {{ and }}"),
        ({"judge_prompt_template": "{question} {expected_answer}"}, "never shows the judge the answer"),
        ({"judge_equal_label": "X", "judge_not_equal_label": "X"}, "must differ from judge_not_equal_label"),
    ],
)
def test_bad_configs_fail_at_start(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="config key") as caught:
        EquivalenceLLMJudge(config=EquivalenceJudgeConfig(**config), server_client=None)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "config",
    [
        {"judge_responses_create_params": {"max_tokens": 5}},  # not a /v1/responses key
        {"response_extract_regex": "(unclosed"},
        {"judge_endpoint_max_concurrency": 0},
        {"judge_model_server": {"type": "resources_servers", "name": "x"}},
    ],
)
def test_invalid_values_are_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EquivalenceJudgeConfig(**config)


def test_unknown_judge_instance_is_a_config_error(judge: ScriptedServer) -> None:
    with pytest.raises(ConfigError, match="judge_model_server.name"):
        make_server(judge, judge_model_server={"type": "responses_api_models", "name": "nope"})


async def test_starts_from_our_config_file_as_ng_run_does(judge: ScriptedServer) -> None:
    global_config = yaml.safe_load((SERVER_DIR / "configs/equivalence_llm_judge.yaml").read_text())
    global_config["judge_model"] = {"responses_api_models": {"vllm_model": judge.address}}
    global_config["equivalence_llm_judge"]["resources_servers"]["equivalence_llm_judge"][
        "check_twice_swap"
    ] = True
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="equivalence_llm_judge", session_secret="s"
    )
    server = EquivalenceLLMJudge.from_context(context)
    assert server.config.name == "equivalence_llm_judge" and server.config.description
    judge.on("/v1/responses", [judge_reply("[[A=B]]")] * 2)
    transport = httpx.ASGITransport(app=server.build_asgi())
    async with httpx.AsyncClient(transport=transport, base_url="http://env") as client:
        r = await client.post("/verify", json=row("Paris"))
    assert r.status_code == 200 and r.json()["reward"] == 1.0 and len(judge.calls) == 2


@pytest.mark.parametrize("path", sorted((SERVER_DIR / "data").glob("*.jsonl")), ids=lambda p: p.name)
def test_example_rows_are_valid(path: Path) -> None:
    for line in path.read_text().splitlines():
        body = {**json.loads(line), "response": policy_response("x")}
        request = EquivalenceJudgeVerifyRequest.model_validate(body)
        assert expected_answer_of(request)


def test_start_errors_name_the_full_key() -> None:
    block = {"entrypoint": "app.py", "judge_prompt_template_fpath": "nope.txt"}
    global_config = {"equivalence_llm_judge": {"resources_servers": {"equivalence_llm_judge": block}}}
    context = RuntimeContext(
        global_config=global_config, origins={}, instance_name="equivalence_llm_judge", session_secret="s"
    )
    with pytest.raises(ConfigError) as caught:
        EquivalenceLLMJudge.from_context(context)
    key = "equivalence_llm_judge.resources_servers.equivalence_llm_judge.judge_prompt_template_fpath"
    assert str(caught.value).startswith(f"config key '{key}': judge prompt template file not found")


def test_episode_session_contract_and_its_expected_answer_check() -> None:
    from fastapi.testclient import TestClient

    from nemo_gym.base_resources_server import ResourcesSeedSessionRequest
    from nemo_gym.testing.session_conformance import check_resources_session_contract

    app = EquivalenceLLMJudge(config=EquivalenceJudgeConfig(name="judge")).setup_webserver()
    seed = ResourcesSeedSessionRequest(
        resources_session_id="resources-session-1",
        episode_id={"rollout_id": "0-0"},
        task_id={"taskset": "judge", "task_id": "0"},
        task_data={"expected_answer": "Paris"},
    )
    check_resources_session_contract(app, seed, keeps_state=False)
    refused = TestClient(app).post(
        "/seed_session", json=seed.model_copy(update={"task_data": {}}).model_dump(mode="json")
    )
    assert refused.status_code == 400 and "expected_answer" in refused.json()["error"]["message"]
