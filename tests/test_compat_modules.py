"""The smaller NeMo Gym 0.7.0 core modules NeMo Gym servers import: prompts, skills, verifier
fixtures, path helpers, deliverables, task materialization, profiling, tool grants, the
Responses converter, model-call capture, the global aiohttp client, and package paths."""

from __future__ import annotations

import asyncio
import json
import pstats
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

import nemo_gym
from nemo_gym import server_utils
from nemo_gym.base_responses_api_model import (
    CaptureStore,
    ModelCallCaptureConfig,
    extract_token_stats,
    install_model_call_capture,
    merge_model_call_capture_into_record,
    model_call_capture_dirs_from_config,
    observability_enabled_from_config,
    read_model_call_records,
)
from nemo_gym.deliverables import is_deliverable
from nemo_gym.openai_utils import (
    NeMoGymChatCompletionCreateParamsNonStreaming,
    NeMoGymResponseCreateParamsNonStreaming,
)
from nemo_gym.path_utils import aggregate_metrics_path_for, failures_path_for, materialized_path_for
from nemo_gym.profiling import Profiler
from nemo_gym.prompt import (
    PromptConfig,
    PromptConfigError,
    apply_prompt_to_row,
    fill_prompt,
    load_prompt_config,
    materialize_prompts,
)
from nemo_gym.responses_converter import ResponsesConverter, VLLMConverter, split_responses_input_output_items
from nemo_gym.rollout_correlation import current_rollout_id
from nemo_gym.skills import load_skill_directory, parse_skill_md, stage_skills
from nemo_gym.task_materialization import materialize_task
from nemo_gym.tool_access import DirectHTTPToolAccess, ToolAccess
from nemo_gym.verifier_fixture import VerifierFixture, VerifierFixtureError, exercise_verifier_fixture

# ---------------------------------------------------------------------------- prompt


def test_prompt_files_fill_rows(tmp_path: Path) -> None:
    prompt = tmp_path / "judge.yaml"
    prompt.write_text("system: You grade {subject}.\nuser: 'Q: {question} {{literal}}'\n")
    config = load_prompt_config(str(prompt))
    assert config == PromptConfig(system="You grade {subject}.", user="Q: {question} {{literal}}")
    row = {"question": "2+2?", "subject": "math", "responses_create_params": {"temperature": 0.1}}
    assert fill_prompt(config, row) == [
        {"role": "system", "content": "You grade math."},
        {"role": "user", "content": "Q: 2+2? {literal}"},
    ]
    applied = apply_prompt_to_row(row, config)
    assert applied["responses_create_params"] == {"temperature": 0.1, "input": fill_prompt(config, row)}
    assert row["responses_create_params"] == {"temperature": 0.1}  # the source row is untouched
    with pytest.raises(KeyError, match="uses the field 'subject' but the row only has the fields"):
        fill_prompt(config, {"question": "x"})
    (tmp_path / "typo.yaml").write_text("usr: hi\n")
    with pytest.raises(
        PromptConfigError, match=r"typo.yaml is not valid: user: Field required; usr: Extra inputs"
    ):
        load_prompt_config(str(tmp_path / "typo.yaml"))


def test_materialize_prompts_refuses_prefilled_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text("user: '{q}'\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"q": "a"}) + "\n" + json.dumps({"q": "b"}) + "\n")
    out = tmp_path / "out" / "rows.jsonl"
    materialize_prompts(str(rows), str(tmp_path / "p.yaml"), str(out))
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["responses_create_params"]["input"] for r in written] == [
        [{"role": "user", "content": "a"}],
        [{"role": "user", "content": "b"}],
    ]
    assert written[0]["prompt_config_used"] == str(tmp_path / "p.yaml")
    rows.write_text(json.dumps({"q": "a", "responses_create_params": {"input": "already"}}) + "\n")
    with pytest.raises(ValueError, match=r"Rows with input: \[0\]"):
        materialize_prompts(str(rows), str(tmp_path / "p.yaml"), str(out))


# ---------------------------------------------------------------------------- skills


def test_skills_load_hash_and_stage(tmp_path: Path) -> None:
    skills = tmp_path / "skills"
    (skills / "search").mkdir(parents=True)
    (skills / "search" / "SKILL.md").write_text(
        "\ufeff---\nname: search\ndescription: Find things\nmetadata:\n  version: 2\n---\nBody\n"
    )
    (skills / "search" / "helper.py").write_text("print(1)\n")
    ref = load_skill_directory(str(skills))
    assert [(s.name, s.description, s.version) for s in ref.skills] == [("search", "Find things", "2")]
    first_hash = ref.hash
    (skills / "search" / "helper.py").write_text("print(2)\n")  # rewritten in place: a new version
    assert load_skill_directory(str(skills)).hash != first_hash and len(first_hash) == 12
    stage_skills(str(skills), tmp_path / "staged")
    assert (tmp_path / "staged" / "search" / "helper.py").read_text() == "print(2)\n"
    (tmp_path / "bad.md").write_text("no front matter")
    with pytest.raises(ValueError, match="has no YAML front matter"):
        parse_skill_md(tmp_path / "bad.md")
    (skills / "empty").mkdir()
    with pytest.raises(ValueError, match="skill directory .*empty has no SKILL.md"):
        load_skill_directory(str(skills))


# ---------------------------------------------------------------------------- verifier fixtures


class ScoreRequest(BaseModel):
    answer: str
    seed: int = 0


class Scorer:
    """Rewards the answer "yes"; a seeded mode adds the reseeded value."""

    def __init__(self) -> None:
        self.offset = 0.0

    def verify(self, request: ScoreRequest) -> dict[str, float]:
        if request.answer == "crash":
            raise ValueError("answer cannot be parsed")
        return {"reward": 1.0 if request.answer == "yes" else 0.0 + self.offset}


def write_cases(path: Path, *cases: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


FULL = {"name": "full", "kind": "full_reward", "request": {"answer": "yes"}, "expected_reward": 1.0}
ZERO = {"name": "zero", "kind": "zero_reward", "request": {"answer": "no"}, "expected_reward": 0.0}
BAD = {
    "name": "bad",
    "kind": "malformed",
    "request": {"answer": "crash"},
    "expected_error": "cannot be parsed",
}


async def test_verifier_fixture_passes_and_catches_a_wrong_verifier(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", FULL, ZERO, BAD)
    fixture = VerifierFixture(server_factory=Scorer, request_model=ScoreRequest, cases_path=cases)
    results = await exercise_verifier_fixture(fixture, reward_range=[0, 1], determinism="unknown")
    assert [(r.name, r.kind, r.observed_rewards) for r in results] == [
        ("full", "full_reward", (1.0,)),
        ("zero", "zero_reward", (0.0,)),
        ("bad", "malformed", ()),
    ]
    write_cases(cases, {**FULL, "request": {"answer": "no"}, "expected_reward": 0.0}, ZERO, BAD)
    with pytest.raises(VerifierFixtureError, match="full-reward case 'full' must score the upper end"):
        await exercise_verifier_fixture(fixture, reward_range=[0, 1], determinism="unknown")
    write_cases(cases, FULL, ZERO)
    with pytest.raises(VerifierFixtureError, match="has no case of kind: malformed"):
        await exercise_verifier_fixture(fixture, reward_range=[0, 1], determinism="unknown")
    write_cases(cases, FULL, ZERO, {**BAD, "request": {"answer": "no"}})
    with pytest.raises(VerifierFixtureError, match="malformed case 'bad' did not raise"):
        await exercise_verifier_fixture(fixture, reward_range=[0, 1], determinism="unknown")
    (tmp_path / "broken.jsonl").write_text('{"name": "x", "kind": "full_reward", "request": {}}\n')
    with pytest.raises(
        VerifierFixtureError, match=r"broken.jsonl:1: a full_reward case needs expected_reward"
    ):
        await exercise_verifier_fixture(
            VerifierFixture(Scorer, ScoreRequest, tmp_path / "broken.jsonl"),
            reward_range=[0, 1],
            determinism="unknown",
        )


async def test_verifier_fixture_updates_expected_rewards(tmp_path: Path) -> None:
    cases = write_cases(tmp_path / "cases.jsonl", {**FULL, "expected_reward": 0.5}, ZERO, BAD)
    fixture = VerifierFixture(server_factory=Scorer, request_model=ScoreRequest, cases_path=cases)
    await exercise_verifier_fixture(fixture, reward_range=[0, 1], determinism="unknown", update_expected=True)
    assert json.loads(cases.read_text().splitlines()[0])["expected_reward"] == 1.0


async def test_equivalence_llm_judge_fixture_holds() -> None:
    from resources_servers.equivalence_llm_judge.app import VERIFIER_FIXTURE

    results = await exercise_verifier_fixture(
        VERIFIER_FIXTURE, reward_range=(0.0, 1.0), determinism="unknown"
    )
    assert [(r.kind, r.observed_rewards) for r in results] == [
        ("full_reward", (1.0,)),
        ("zero_reward", (0.0,)),
        ("zero_reward", (0.0,)),
        ("malformed", ()),
    ]


# ---------------------------------------------------------------------------- small helpers


def test_paths_deliverables_and_tasks(tmp_path: Path) -> None:
    out = Path("results/run.jsonl")
    assert (failures_path_for(out), materialized_path_for(out), aggregate_metrics_path_for(out)) == (
        Path("results/run_failures.jsonl"),
        Path("results/run_materialized_inputs.jsonl"),
        Path("results/run_aggregate_metrics.json"),
    )
    (tmp_path / "report.md").write_text("x")
    (tmp_path / "metadata.json").write_text("{}")
    assert is_deliverable(tmp_path / "report.md") and not is_deliverable(tmp_path / "metadata.json")
    assert not is_deliverable(tmp_path)
    row = {"instance_id": 12, "prompt": "p", "agent_ref": {"name": "a"}, "_ng_task_index": 3}
    assert materialize_task(row, taskset="swe") == {
        "task_id": {"taskset": "swe", "task_id": "12"},
        "task_input": {"instance_id": 12, "prompt": "p"},
    }
    assert materialize_task({"q": 1, "_ng_task_index": 4}, taskset="t")["task_id"]["task_id"] == "4"
    with pytest.raises(ValueError, match="needs a non-negative task_index"):
        materialize_task({"q": 1}, taskset="t")
    with pytest.raises(ValueError, match="already a materialized task"):
        materialize_task({"task_id": {"taskset": "t"}, "task_input": {}}, taskset="t")


def test_profiler_writes_its_report(tmp_path: Path) -> None:
    def busy() -> int:
        return sum(i * i for i in range(20_000))

    profiler = Profiler(name="agent-run", base_profile_dir=tmp_path, required_str="busy")
    profiler.start()
    busy()
    profiler.stop()
    log = (tmp_path / "agent-run.log").read_text()
    assert "ncalls" in log and "busy" in log
    assert all("busy" in line for line in log.split("ncalls", 1)[1].splitlines()[1:] if line.strip())
    assert any("busy" in key[2] for key in pstats.Stats(str(tmp_path / "agent-run.prof")).stats)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="may not contain spaces"):
        Profiler(name="two words", base_profile_dir=tmp_path)


def test_tool_access_and_package_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import TypeAdapter

    grant = TypeAdapter(ToolAccess).validate_python(
        {
            "kind": "direct_http",
            "name": "weather.direct_http",
            "required": True,
            "base_url": "http://127.0.0.1:1",
        }
    )
    assert isinstance(grant, DirectHTTPToolAccess) and grant.cookies == {}
    with pytest.raises(ValidationError):
        TypeAdapter(ToolAccess).validate_python(
            {"kind": "direct_http", "name": "bad name", "required": True, "base_url": "x"}
        )
    assert nemo_gym.PARENT_DIR == Path(__file__).resolve().parents[1]
    (tmp_path / "README.md").write_text("mine")
    assert nemo_gym._resolve_under_cwd_or_install("README.md") == nemo_gym.PARENT_DIR / "README.md"
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(tmp_path))
    assert nemo_gym._resolve_under_cwd_or_install("README.md") == tmp_path / "README.md"
    assert nemo_gym.component_search_roots()[0] == tmp_path


# ---------------------------------------------------------------------------- Responses converter


def test_converter_round_trips_with_our_conversion() -> None:
    assert VLLMConverter is ResponsesConverter
    converter = ResponsesConverter(return_token_id_information=False)
    params = NeMoGymResponseCreateParamsNonStreaming.model_validate(
        {
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "think"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "42"},
            ],
            "max_output_tokens": 9,
        }
    )
    chat = converter.responses_to_chat_completion_create_params(params).model_dump(exclude_unset=True)
    assert chat["messages"] == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "think",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    assert chat["max_completion_tokens"] == 9
    items = converter.postprocess_assistant_message_dict(
        {
            "role": "assistant",
            "content": "<think>why</think>Answer",
            "tool_calls": [{"id": "t1", "function": {"name": "g", "arguments": "{}"}}],
        }
    )
    assert [item.type for item in items] == ["reasoning", "message", "function_call"]
    assert items[0].summary[0].text == "why" and items[1].content[0].text == "Answer"
    assert ResponsesConverter._parse_think_tags("<think>a</think>b<think>c</think>") == (["a", "c"], "b")
    assert (
        ResponsesConverter._wrap_reasoning_in_think_tags(["a", "", "b"]) == "<think>a</think><think>b</think>"
    )
    training = ResponsesConverter(return_token_id_information=True).postprocess_assistant_message_dict(
        {
            "role": "assistant",
            "content": "x",
            "prompt_token_ids": [1],
            "generation_token_ids": [2],
            "generation_log_probs": [-0.5],
        }
    )
    assert training[-1].generation_token_ids == [2]
    back = converter.chat_completion_to_responses_create_params(
        NeMoGymChatCompletionCreateParamsNonStreaming.model_validate(
            {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7, "temperature": 0.5}
        )
    )
    assert (back.max_output_tokens, back.temperature, back.tool_choice) == (7, 0.5, "auto")
    response = converter.chat_completion_to_response(
        params,
        {
            "id": "chatcmpl-9",
            "created": 3,
            "model": "m",
            "choices": [
                {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "cut"}}
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
        },
        preserve_envelope_id=True,
    )
    assert (response.id, response.status, response.usage.output_tokens) == ("chatcmpl-9", "incomplete", 2)
    prompt, generated = split_responses_input_output_items(
        [
            {"type": "message", "role": "user"},
            {"type": "function_call_output"},
            {"type": "reasoning"},
            {"type": "message", "role": "assistant"},
        ]
    )
    assert (len(prompt), len(generated)) == (2, 2)


# ---------------------------------------------------------------------------- model-call capture


async def test_capture_middleware_records_prefixed_calls_and_merge_attaches_them(tmp_path: Path) -> None:
    app = FastAPI()
    seen: list[str | None] = []

    @app.post("/v1/responses")
    async def responses(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(current_rollout_id())
        return {
            "id": f"resp-{body['input']}",
            "status": "completed",
            "model": "m",
            "output": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": 1}'}],
            "usage": {"input_tokens": 10, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 4}},
        }

    config = ModelCallCaptureConfig(observability_enabled=True, model_call_capture_dir=tmp_path)
    install_model_call_capture(app, config, model_server_name="policy_model")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as client:
        for turn in ("a", "b"):
            assert (
                await client.post("/ng-rollout/2-0/v1/responses", json={"input": turn})
            ).status_code == 200
        assert (await client.post("/v1/responses", json={"input": "unprefixed"})).status_code == 200
    assert seen == ["2-0", "2-0", None]
    records = read_model_call_records(CaptureStore(tmp_path), "2-0")
    assert [(r.call_index, r.response_id, r.tokens_in, r.tokens_total, r.cached_tokens) for r in records] == [
        (0, "resp-a", 10, 12, 4),
        (1, "resp-b", 10, 12, 4),
    ]
    assert records[0].tool_calls == [{"call_id": "c", "name": "f", "arguments": {"a": 1}}]
    assert records[0].model_ref is not None and records[0].model_ref.name == "policy_model"

    record: dict[str, Any] = {"_ng_task_index": 2, "_ng_rollout_index": 0, "reward": 1.0}
    merge_model_call_capture_into_record(record, model_call_capture_dirs_from_config(config.model_dump()))
    capture = record["ng_model_call_capture"]
    assert capture["rollout_id"] == "2-0" and "gaps" not in capture
    assert capture["metrics"]["tokens_in"] == 20 and capture["metrics"]["num_calls"] == 2
    assert "request" not in capture["calls"][0] and record["reward"] == 1.0
    missing: dict[str, Any] = {"_ng_task_index": 9, "_ng_rollout_index": 0}
    merge_model_call_capture_into_record(missing, [tmp_path])
    assert missing["ng_model_call_capture"]["gaps"] == [{"code": "model_call_capture_no_records"}]


def test_capture_config_and_token_stats() -> None:
    assert observability_enabled_from_config({"observability_enabled": True})
    assert model_call_capture_dirs_from_config({"observability_enabled": True}) == []
    with pytest.raises(ValidationError, match="must be absolute"):
        ModelCallCaptureConfig(observability_enabled=True, model_call_capture_dir=Path("relative"))
    assert extract_token_stats({"input_tokens": 5, "cache_read_input_tokens": 3, "output_tokens": 2}) == {
        "tokens_in": 8,
        "tokens_out": 2,
        "tokens_reasoning": None,
        "tokens_total": 10,
        "cache_creation_tokens": None,
    }


# ---------------------------------------------------------------------------- global aiohttp client


async def test_global_aiohttp_client_is_made_once() -> None:
    session = server_utils.set_global_aiohttp_client(
        server_utils.GlobalAIOHTTPAsyncClientConfig(
            global_aiohttp_connector_limit=7,
            global_aiohttp_connector_limit_per_host=3,
            global_aiohttp_client_request_debug=True,
        )
    )
    try:
        assert (
            server_utils.is_global_aiohttp_client_setup() and server_utils._GLOBAL_AIOHTTP_CLIENT is session
        )
        assert (session.connector.limit, session.connector.limit_per_host) == (7, 3)
        assert server_utils.is_global_aiohttp_client_request_debug_enabled()
        with pytest.raises(RuntimeError, match="already exists"):
            server_utils.set_global_aiohttp_client(server_utils.GlobalAIOHTTPAsyncClientConfig())
    finally:
        await server_utils.global_aiohttp_client_aclose()
    assert not server_utils.is_global_aiohttp_client_setup() and session.closed
    await asyncio.sleep(0)


def test_session_conformance_catches_a_revived_session() -> None:
    from nemo_gym.base_resources_server import (
        BaseResourcesServerConfig,
        BaseVerifyRequest,
        ResourcesSeedSessionRequest,
        SimpleResourcesServer,
    )
    from nemo_gym.testing.session_conformance import check_resources_session_contract

    class Stateless(SimpleResourcesServer):
        config: BaseResourcesServerConfig

        async def verify(self, body: BaseVerifyRequest) -> Any:
            return {"reward": 0.0}

    app = Stateless(config=BaseResourcesServerConfig(name="s")).setup_webserver()
    seed = ResourcesSeedSessionRequest(
        resources_session_id="s-1",
        episode_id={"rollout_id": "1-0"},
        task_id={"taskset": "t", "task_id": "1"},
        task_data={},
    )
    check_resources_session_contract(app, seed, keeps_state=False)
    with pytest.raises(AssertionError, match="a seed after the close brought session 's-1' back"):
        check_resources_session_contract(app, seed, keeps_state=True)


def test_converter_draws_item_ids_with_its_own_uuid4(monkeypatch: pytest.MonkeyPatch) -> None:
    """NeMo Gym's environments' tests fix the ids by patching `nemo_gym.responses_converter.uuid4`."""
    from types import SimpleNamespace

    import nemo_gym.responses_converter as converter_module

    monkeypatch.setattr(converter_module, "uuid4", lambda: SimpleNamespace(hex="fixed"))
    items = ResponsesConverter(return_token_id_information=False).postprocess_assistant_message_dict(
        {"role": "assistant", "content": "<think>hmm</think>Hello"}
    )
    assert [(item.type, item.id) for item in items] == [("reasoning", "rs_fixed"), ("message", "msg_fixed")]
