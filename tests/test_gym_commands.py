"""The ng_* commands the `gym` command added (list, validate, aggregate, profile, reverify,
prepare_data, materialize_prompts): what each writes and prints, and how each refuses bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.cli import (
    ng_aggregate_rollouts,
    ng_list,
    ng_materialize_prompts,
    ng_prepare_data,
    ng_reverify_rollouts,
    ng_reward_profile,
    ng_validate,
)
from nemo_gym.cli.common import run_cli
from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.http.server_client import ServerClient

FIXTURE_BUNDLES = PROJECT_ROOT / "tests" / "fixtures"


def run(module: Any, args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        run_cli(module.main, args, command=module.COMMAND, summary=module.SUMMARY, keys=module.KEYS)
    return int(info.value.code or 0)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No env.yaml, no extra roots, and a working directory of the test's own."""
    monkeypatch.setenv("NEMO_GYM_ENV_YAML", "none")
    monkeypatch.delenv("NEMO_GYM_EXTRA_ROOTS", raising=False)
    monkeypatch.chdir(tmp_path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- ng_list


def plugin_root(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    agent = root / "responses_api_agents" / "loop_agent"
    (agent / "configs").mkdir(parents=True)
    (agent / "app.py").write_text("")
    (agent / "configs" / "loop_agent.yaml").write_text(
        "loop:\n  responses_api_agents:\n    loop_agent:\n      entrypoint: app.py\n      description: Loops.\n"
    )
    bundle = root / "environments" / "maze"
    bundle.mkdir(parents=True)
    (bundle / "config.yaml").write_text("config_paths:\n- resources_servers/maze/configs/maze.yaml\n")
    (bundle / "manifest.yaml").write_text(
        "name: maze\ndomain: games\ndescription: Find the exit.\nversion: 1.0\n"
    )
    return root


def test_list_shows_the_roots_components_and_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(plugin_root(tmp_path)))
    assert run(ng_list, ["+component_type=agents", "+json=true"]) == 0
    agents = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert agents["loop_agent"]["description"] == "Loops."
    assert agents["simple_agent"]["path"] == str(PROJECT_ROOT / "responses_api_agents" / "simple_agent")

    assert run(ng_list, ["+component_type=environments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "domain", "description"]
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[2:]}
    assert rows["maze"] == "games Find the exit."
    assert rows["simple_weather"] == ""

    assert run(ng_list, ["+component_type=environments", "+component_name=maze"]) == 0
    assert capsys.readouterr().out.splitlines()[:4] == [
        "maze (environment)",
        "  domain: games",
        "  description: Find the exit.",
        f"  path: {tmp_path / 'plugins' / 'environments' / 'maze'}",
    ]


def test_list_unknown_name_suggests_the_closest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(plugin_root(tmp_path)))
    assert run(ng_list, ["+component_type=agents", "+component_name=loop_agnt"]) == 2
    assert capsys.readouterr().err == (
        "config error: config key 'component_name': no agents is named 'loop_agnt'; did you mean `loop_agent`?\n"
    )


# --------------------------------------------------------------------------- ng_validate

WEATHER = str(PROJECT_ROOT / "resources_servers/simple_weather/configs/simple_weather.yaml")
VLLM = str(PROJECT_ROOT / "responses_api_models/vllm_model/configs/vllm_model.yaml")


def test_validate_a_config_lists_its_servers(capsys: pytest.CaptureFixture[str]) -> None:
    model = ["+policy_base_url=http://127.0.0.1:9/v1", "+policy_api_key=EMPTY", "+policy_model_name=m"]
    assert run(ng_validate, [f"+config_paths=[{WEATHER},{VLLM}]", *model]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "✓ config is valid: 3 server instances",
        "  simple_weather: resources_servers/simple_weather",
        "  simple_weather_simple_agent: responses_api_agents/simple_agent",
        "  policy_model: responses_api_models/vllm_model",
    ]
    assert captured.err == ""


def test_validate_a_config_without_its_model_server_names_the_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(ng_validate, [f"+config_paths=[{WEATHER}]"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "✓ config is valid: 2 server instances",
        "  simple_weather: resources_servers/simple_weather",
        "  simple_weather_simple_agent: responses_api_agents/simple_agent",
    ]
    assert "refers to responses_api_models instance 'policy_model', which is not defined" in captured.err
    assert run(ng_validate, [f"+config_paths=[{WEATHER}]", "+strict=true"]) == 2


def test_validate_without_the_model_endpoint_warns_and_strict_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(ng_validate, [f"+config_paths=[{WEATHER},{VLLM}]"]) == 0
    captured = capsys.readouterr()
    assert "✓ config is valid: 3 server instances" in captured.out
    assert captured.err.startswith(
        "warning: this config does not start as it is (run with +strict=true to fail)"
    )
    assert "Interpolation key 'policy_base_url' not found" in captured.err
    assert run(ng_validate, [f"+config_paths=[{WEATHER},{VLLM}]", "+strict=true"]) == 2
    assert "Interpolation key 'policy_base_url' not found" in capsys.readouterr().err


def test_validate_a_bundle_by_name_checks_its_manifest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(FIXTURE_BUNDLES))
    assert run(ng_validate, ["+environment=weather", "+json=true"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"]["name"] == "weather" and report["manifest"]["datasets"] == [
        {"name": "example", "type": "example"}
    ]
    assert [i["name"] for i in report["instances"]] == [
        "simple_weather",
        "simple_weather_simple_agent",
        "simple_weather_environment_server",
    ]
    assert run(ng_validate, ["+environment=wether"]) == 2
    assert "no environment bundle is named 'wether'; did you mean `weather`?" in capsys.readouterr().err


def test_validate_a_bad_manifest_names_its_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "environments" / "weather"
    shutil.copytree(FIXTURE_BUNDLES / "environments" / "weather", bundle)
    manifest = bundle / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("determinism:", "determinsm:"))
    assert run(ng_validate, [f"+manifest_path={manifest}"]) == 2
    assert capsys.readouterr().err == (
        f"config error: config key 'determinsm' (from {manifest}): is not a manifest key; "
        "did you mean `determinism`?\n"
    )


# --------------------------------------------------------------------------- ng_aggregate_rollouts


def rollout(task: int, repeat: int, reward: float, agent: str = "weather_agent") -> dict:
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": repeat,
        "reward": reward,
        "agent_ref": {"type": "responses_api_agents", "name": agent},
        "response": {"output": [], "status": "completed", "usage": {"output_tokens": 3}},
    }


def test_aggregate_merges_shards_and_their_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "r" / "shard1.jsonl", [rollout(1, 0, 1.0), rollout(0, 1, 0.0)])
    write_jsonl(tmp_path / "r" / "shard2.jsonl", [rollout(0, 0, 1.0)])
    failure = {"_ng_task_index": 1, "_ng_rollout_index": 1, "_ng_failure_class": "timeout"}
    write_jsonl(tmp_path / "r" / "shard2_failures.jsonl", [failure])
    args = [
        "+input_glob=r/shard*.jsonl",
        "+output_jsonl_fpath=r/all.jsonl",
        f"+head_server.port={free_port()}",
    ]
    assert run(ng_aggregate_rollouts, args) == 0
    merged = read_jsonl(tmp_path / "r" / "all.jsonl")
    assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in merged] == [(0, 0), (0, 1), (1, 0)]
    assert read_jsonl(tmp_path / "r" / "all_failures.jsonl") == [failure]
    metrics = json.loads((tmp_path / "r" / "all_aggregate_metrics.json").read_text())
    assert metrics == {
        "reward": pytest.approx(2 / 3),
        "num_rollouts": 3,
        "num_failed": 1,
        "num_context_length_fallbacks": 0,
        "failure_classes": {"timeout": 1},
        "num_shards": 2,
    }
    assert "note: no head server answers" in capsys.readouterr().err
    # Run again: the merged output (and side files) are never taken for a shard.
    assert run(ng_aggregate_rollouts, [*args[:1], "+input_glob=r/*.jsonl", *args[1:]]) == 0
    assert json.loads((tmp_path / "r" / "all_aggregate_metrics.json").read_text())["num_shards"] == 2


def test_aggregate_with_no_match_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(ng_aggregate_rollouts, ["+input_glob=none/*.jsonl", "+output_jsonl_fpath=x.jsonl"]) == 2
    assert "config key 'input_glob' (from command line): matches no rollout file ('none/*.jsonl')" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------- ng_reward_profile


def test_profile_per_task_agent_and_repeat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [rollout(0, 0, 1.0), rollout(0, 1, 0.0), rollout(1, 0, 1.0), rollout(1, 1, 1.0)]
    path = write_jsonl(tmp_path / "run.jsonl", rows)
    assert run(ng_reward_profile, [f"+rollouts_jsonl_fpath={path}"]) == 0
    out = capsys.readouterr().out
    assert "Reward profile: 4/4 rollouts over 2 tasks\n  weather_agent: mean reward 0.7500\n" in out
    tasks = read_jsonl(tmp_path / "run_reward_profiling.jsonl")
    assert [(t["_ng_task_index"], t["mean/reward"], t["num_rollouts"]) for t in tasks] == [
        (0, 0.5, 2),
        (1, 1.0, 2),
    ]
    agents = json.loads((tmp_path / "run_agent_metrics.json").read_text())
    assert agents[0]["mean/reward"] == 0.75 and agents[0]["agent_ref"] == {"name": "weather_agent"}
    repeats = json.loads((tmp_path / "run_repeat_level_metrics.json").read_text())
    assert [(r["_ng_rollout_index"], r["mean/reward"]) for r in repeats] == [(0, 1.0), (1, 0.5)]


@pytest.mark.filterwarnings("ignore:some repeats are missing rollouts")
def test_profile_against_raw_inputs_counts_missing_rollouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"responses_create_params": {"input": "a"}}] * 3)
    path = write_jsonl(tmp_path / "run.jsonl", [rollout(0, 0, 1.0), rollout(0, 1, 0.0), rollout(1, 0, 1.0)])
    args = [f"+rollouts_jsonl_fpath={path}", f"+materialized_inputs_jsonl_fpath={inputs}"]
    assert run(ng_reward_profile, args) == 2
    err = capsys.readouterr().err
    assert "3 rollout(s) have no result, e.g. (1, 1); pass +allow_partial_rollouts=true" in err
    assert run(ng_reward_profile, [*args, "+allow_partial_rollouts=true"]) == 0
    assert "Reward profile: 3/6 rollouts over 2 tasks" in capsys.readouterr().out


# --------------------------------------------------------------------------- ng_reverify_rollouts


class FakeResponse:
    def __init__(self, status: int, body: dict) -> None:
        self.status, self.body = status, body

    async def read(self) -> bytes:
        return json.dumps(self.body).encode()


class FakeClient:
    """A running config of one agent wired to one resources server whose /verify is `verify`."""

    def __init__(self, verify: Callable[[dict], FakeResponse]) -> None:
        self.verify, self.calls = verify, []
        self.global_config = {
            "weather": {"resources_servers": {"weather": {"host": "127.0.0.1", "port": 1}}},
            "weather_agent": {
                "responses_api_agents": {
                    "simple_agent": {"resources_server": {"type": "resources_servers", "name": "weather"}}
                }
            },
        }

    async def post(self, server: str, path: str, json: Any = None) -> FakeResponse:
        self.calls.append((server, path, json))
        return self.verify(json) if path == "/verify" else FakeResponse(404, {})


def test_reverify_sends_each_rollout_to_its_resources_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def verify(body: dict) -> FakeResponse:
        if body["_ng_task_index"] == 2:
            return FakeResponse(500, {"error": {"message": "judge down"}})
        return FakeResponse(200, {**body, "reward": 0.5, "judged": True})

    client = FakeClient(verify)
    monkeypatch.setattr(ServerClient, "load_from_global_config", classmethod(lambda cls, head=None: client))
    rows = [rollout(0, 0, 1.0), rollout(1, 0, 0.5), rollout(2, 0, 0.0)]
    rows[0]["ng_perf"] = {"num_turns": 1}
    path = write_jsonl(tmp_path / "run.jsonl", rows)
    args = [f"+rollouts_jsonl_fpath={path}", f"+output_jsonl_fpath={tmp_path / 'v.jsonl'}"]
    assert run(ng_reverify_rollouts, args) == 0
    sent = sorted(
        ((c[0], c[2]) for c in client.calls if c[1] == "/verify"), key=lambda c: c[1]["_ng_task_index"]
    )
    assert sent[0] == ("weather", {k: v for k, v in rows[0].items() if k not in ("reward", "ng_perf")})
    written = sorted(read_jsonl(tmp_path / "v.jsonl"), key=lambda r: r["_ng_task_index"])
    assert [(r["_ng_task_index"], r["reward"], r["judged"]) for r in written] == [
        (0, 0.5, True),
        (1, 0.5, True),
    ]
    failures = read_jsonl(tmp_path / "v_failures.jsonl")
    assert [(f["_ng_task_index"], f["_ng_failure_class"]) for f in failures] == [(2, "verify_failed")]
    assert failures[0]["_ng_failure_message"] == "/verify on weather answered 500: judge down"
    assert "2 re-verified (1 rewards changed), 1 failed" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "v_aggregate_metrics.json").read_text())
    assert (metrics["reward"], metrics["num_rewards_changed"], metrics["num_failed"]) == (0.5, 1, 1)
    # An existing output is never overwritten by accident.
    assert run(ng_reverify_rollouts, args) == 2
    assert "already exists; pass +overwrite=true to replace it" in capsys.readouterr().err


def test_reverify_refuses_a_rollout_without_a_response(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "run.jsonl", [{"_ng_task_index": 4, "_ng_rollout_index": 1, "reward": 1.0}])
    assert run(ng_reverify_rollouts, [f"+rollouts_jsonl_fpath={path}", "+output_jsonl_fpath=v.jsonl"]) == 2
    assert "rollout (task 4, rollout 1) has no `response` to verify" in capsys.readouterr().err


# --------------------------------------------------------------------------- ng_prepare_data


def dataset_config(tmp_path: Path, rows: list[dict], num_repeats: int = 1) -> Path:
    write_jsonl(tmp_path / "data" / "example.jsonl", rows)
    config = tmp_path / "env.yaml"
    config.write_text(
        f"""
maze:
  resources_servers:
    maze:
      entrypoint: app.py
      datasets:
      - {{name: example, type: example, jsonl_fpath: data/example.jsonl, num_repeats: {num_repeats}}}
      - {{name: train, type: train, jsonl_fpath: data/train.jsonl}}
maze_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {{type: resources_servers, name: maze}}
      model_server: {{type: responses_api_models, name: policy_model}}
"""
    )
    return config


ROW = {
    "responses_create_params": {
        "input": [{"role": "user", "content": "go"}],
        "tools": [{"type": "function", "name": "move"}],
    }
}


def test_collate_example_rows_with_their_agent_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataset_config(tmp_path, [ROW, {**ROW, "expected": 2}], num_repeats=2)
    args = [f"+config_paths=[{config}]", "+mode=example_validation", "+output_dirpath=out"]
    assert run(ng_prepare_data, args) == 0
    agent = {"type": "responses_api_agents", "name": "maze_agent"}
    assert read_jsonl(tmp_path / "out" / "example.jsonl") == [
        {**ROW, "agent_ref": agent},
        {**ROW, "agent_ref": agent},
        {**ROW, "expected": 2, "agent_ref": agent},
        {**ROW, "expected": 2, "agent_ref": agent},
    ]
    metrics = json.loads((tmp_path / "out" / "example_metrics.json").read_text())
    assert metrics["number_of_examples"] == 4
    assert metrics["number_of_tools"] == {"total": 4, "average": 1.0, "min": 1, "max": 1, "stddev": 0.0}
    assert metrics["number_of_turns"]["average"] == 1.0
    assert "maze: example (example, x2) -> maze_agent" in capsys.readouterr().out


def test_collate_refuses_bad_rows_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataset_config(tmp_path, [ROW, {"prompt": "no params"}])
    args = [f"+config_paths=[{config}]", "+output_dirpath=out"]
    assert run(ng_prepare_data, [*args, "+mode=example_validation"]) == 2
    assert (
        f"config key 'example': {tmp_path / 'data' / 'example.jsonl'}:2: the row has no 'responses_create_params' object"
        in capsys.readouterr().err
    )
    assert run(ng_prepare_data, [*args, "+mode=train_preparation", "+should_download=true"]) == 2
    err = capsys.readouterr().err
    assert "missing datasets: maze: train (data/train.jsonl); downloading from a hub is not done here" in err


# --------------------------------------------------------------------------- ng_materialize_prompts


def test_render_fills_the_prompt_from_each_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"question": "2+2?"}, {"question": "3+3?"}])
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("system: Be brief.\nuser: 'Answer: {question}'\n")
    out = tmp_path / "out.jsonl"
    args = [f"+input_jsonl_fpath={raw}", f"+prompt_config={prompt}", f"+output_jsonl_fpath={out}"]
    assert run(ng_materialize_prompts, args) == 0
    assert read_jsonl(out)[1] == {
        "question": "3+3?",
        "responses_create_params": {
            "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Answer: 3+3?"}]
        },
        "prompt_config_used": str(prompt),
    }
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("user: '{answer}'\n")
    assert run(ng_materialize_prompts, [args[0], f"+prompt_config={wrong}", args[2]]) == 2
    assert "the prompt template uses the field 'answer'" in capsys.readouterr().err
