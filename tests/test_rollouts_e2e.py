"""ng_collect_rollouts end to end: simulator → ng_run (adapter, environment, agent) → collector."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.testing.processes import (
    NgRun,
    collect_rollouts_command,
    hermetic_env,
    ng_run,
    simulator,
    wait_for_lines,
)

pytestmark = pytest.mark.e2e
WEATHER = "resources_servers/simple_weather/data/example.jsonl"
CONFIGS = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,resources_servers/simple_weather/configs/simple_weather.yaml]"


@pytest.fixture(scope="module")
def weather_stack() -> Iterator[tuple[NgRun, str]]:
    with simulator("--latency-ms", "30") as (sim_url, _):
        with ng_run(
            CONFIGS, f"+policy_base_url={sim_url}", "+policy_api_key=EMPTY", "+policy_model_name=sim-model"
        ) as run:
            yield run, sim_url


def collect(run: NgRun, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = collect_rollouts_command(run.head_port, *args)
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=hermetic_env(), capture_output=True, text=True, timeout=timeout
    )


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sim_stats(sim_url: str) -> dict:
    return httpx.get(sim_url.removesuffix("/v1") + "/sim/stats").json()


def test_limit_repeats_concurrency_overrides_metrics(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, sim_url = weather_stack
    out = tmp_path / "roll.jsonl"
    before = sim_stats(sim_url)["max_in_flight"]
    assert before <= 1
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={WEATHER}",
        f"+output_jsonl_fpath={out}",
        "+limit=3",
        "+num_repeats=4",
        "+num_samples_in_parallel=5",
        "+responses_create_params.temperature=0.25",
        "+responses_create_params.max_output_tokens=200",
    )
    assert result.returncode == 0, result.stderr
    got = rows(out)
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in got) == [
        (i, k) for i in range(3) for k in range(4)
    ]
    assert all(r["reward"] == 1.0 for r in got)
    assert all(
        r["responses_create_params"]["temperature"] == 0.25
        and r["responses_create_params"]["max_output_tokens"] == 200
        for r in got
    )
    assert all(r["response"]["temperature"] == 0.25 for r in got)
    assert all(
        [i["type"] for i in r["response"]["output"]]
        == ["reasoning", "function_call", "function_call_output", "reasoning", "message"]
        for r in got
    )
    assert 1 < sim_stats(sim_url)["max_in_flight"] <= 5
    metrics = json.loads((tmp_path / "roll_aggregate_metrics.json").read_text())
    assert metrics["reward"] == 1.0 and metrics["num_rollouts"] == 12 and metrics["num_failed"] == 0
    assert (tmp_path / "roll_failures.jsonl").read_text() == ""
    assert str(out) in result.stdout


def test_bad_rows_go_to_failures_and_the_run_continues(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, _ = weather_stack
    source = tmp_path / "in.jsonl"
    good = (PROJECT_ROOT / WEATHER).read_text().splitlines()[0]
    source.write_text(
        "\n".join([good, "{not json", '{"no_params": 1}', '{"responses_create_params": {"input": 42}}', good])
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={out}",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(r["_ng_task_index"] for r in rows(out)) == [0, 4]
    failures = {f["_ng_task_index"]: f["_ng_failure_message"] for f in rows(tmp_path / "o_failures.jsonl")}
    assert sorted(failures) == [1, 2, 3]
    assert failures[1].startswith(f"{source}:2: invalid JSON")
    assert failures[2] == f"{source}:3: row has no 'responses_create_params' object"
    assert "returned HTTP 422: Invalid 'responses_create_params.input" in failures[3]
    assert json.loads((tmp_path / "o_aggregate_metrics.json").read_text())["num_failed"] == 3


def test_resume_after_sigkill_completes_exactly_once(tmp_path: Path) -> None:
    with simulator("--latency-ms", "150") as (sim_url, _):
        with ng_run(
            CONFIGS, f"+policy_base_url={sim_url}", "+policy_api_key=EMPTY", "+policy_model_name=sim-model"
        ) as run:
            out = tmp_path / "r.jsonl"
            args = [
                "+agent_name=simple_weather_simple_agent",
                f"+input_jsonl_fpath={WEATHER}",
                f"+output_jsonl_fpath={out}",
                "+num_repeats=8",
                "+concurrency=4",
            ]
            command = collect_rollouts_command(run.head_port, *args)
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=hermetic_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_lines(out, 6, 60, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            partial = rows(out)
            assert 6 <= len(partial) < 40
            result = collect(run, *args, "+resume_from_cache=true")
            assert result.returncode == 0, result.stderr
            final = Counter((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows(out))
            assert set(final) == {(i, k) for i in range(5) for k in range(8)}
            assert max(final.values()) == 1
            metrics = json.loads((tmp_path / "r_aggregate_metrics.json").read_text())
            assert metrics["num_rollouts"] == 40 and metrics["num_skipped_already_done"] == len(partial)
            assert metrics["num_attempted_this_run"] == 40 - len(partial)


def test_ctrl_c_leaves_only_whole_rows(tmp_path: Path) -> None:
    with simulator("--latency-ms", "100") as (sim_url, _):
        with ng_run(
            CONFIGS, f"+policy_base_url={sim_url}", "+policy_api_key=EMPTY", "+policy_model_name=sim-model"
        ) as run:
            out = tmp_path / "c.jsonl"
            command = collect_rollouts_command(
                run.head_port,
                "+agent_name=simple_weather_simple_agent",
                f"+input_jsonl_fpath={WEATHER}",
                f"+output_jsonl_fpath={out}",
                # 200 rollouts of at least 200 ms each, 8 at a time: seconds of work left when the
                # interrupt comes, even on a loaded machine where the 3rd row is seen late.
                "+num_repeats=40",
                "+concurrency=8",
            )
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=hermetic_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                # A shell's background job (`make test &`) starts with SIGINT ignored, and a child
                # inherits that: this test is about what Ctrl-C does, so the child gets the default.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            wait_for_lines(out, 3, 60, proc)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 130
            assert "rerun with +resume_from_cache=true" in err
            text = out.read_text()
            assert text.endswith("\n") and all(
                json.loads(line)["reward"] == 1.0 for line in text.splitlines()
            )
            assert 3 <= len(text.splitlines()) < 200


def test_equivalence_judge_with_separate_policy_and_judge(tmp_path: Path) -> None:
    with (
        simulator("--instance-id", "policy") as (policy_url, _),
        simulator("--instance-id", "judge", "--model", "judge-model") as (judge_url, _),
    ):
        configs = (
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,responses_api_models/vllm_model/configs/vllm_judge_model.yaml,"
            "resources_servers/equivalence_llm_judge/configs/equivalence_llm_judge.yaml]"
        )
        with ng_run(
            configs,
            f"+policy_base_url={policy_url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            f"+judge_base_url={judge_url}",
            "+judge_api_key=EMPTY",
            "+judge_model_name=judge-model",
            "+equivalence_llm_judge.resources_servers.equivalence_llm_judge.check_twice_swap=true",
        ) as run:
            source = tmp_path / "q.jsonl"
            source.write_text(
                json.dumps(
                    {
                        "responses_create_params": {"input": "What is 2+2?"},
                        "expected_answer": "Simulated answer to: What is 2+2?",
                    }
                )
                + "\n"
                + json.dumps(
                    {"responses_create_params": {"input": "Capital of France?"}, "expected_answer": "Paris"}
                )
                + "\n"
            )
            out = tmp_path / "j.jsonl"
            result = collect(
                run,
                "+agent_name=equivalence_llm_judge_simple_agent",
                f"+input_jsonl_fpath={source}",
                f"+output_jsonl_fpath={out}",
            )
            assert result.returncode == 0, result.stderr
            by_row = {r["_ng_task_index"]: r for r in rows(out)}
            assert by_row[0]["reward"] == 1.0 and [e["verdict"] for e in by_row[0]["judge_evaluations"]] == [
                "equal",
                "equal",
            ]
            assert by_row[1]["reward"] == 0.0 and [e["verdict"] for e in by_row[1]["judge_evaluations"]] == [
                "not_equal"
            ]
            assert by_row[0]["judge_evaluations"][0]["response"]["model"] == "judge-model"
            assert httpx.get(judge_url.removesuffix("/v1") + "/sim/stats").json()["requests"] == 3
            assert httpx.get(policy_url.removesuffix("/v1") + "/sim/stats").json()["requests"] == 2


def test_unknown_flag_is_refused_and_a_200_row_output_survives(tmp_path: Path) -> None:
    out = tmp_path / "keep.jsonl"
    out.write_text(
        "".join(json.dumps({"_ng_task_index": i, "_ng_rollout_index": 0}) + "\n" for i in range(200))
    )
    before = out.read_bytes()
    result = collect_cmd(
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={WEATHER}",
        f"+output_jsonl_fpath={out}",
        "+concurency=8",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: config key 'concurency' (from command line): "
        "is not a key of ng_collect_rollouts; did you mean `concurrency`?"
    )
    assert out.read_bytes() == before


def collect_cmd(*args: str) -> subprocess.CompletedProcess:
    """The collector with no stack behind it (head port 9: nothing listens there)."""
    return subprocess.run(
        collect_rollouts_command(9, *args),
        cwd=PROJECT_ROOT,
        env=hermetic_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_keys_and_exits_0() -> None:
    for flag in ("--help", "-h", "+help=true"):
        result = collect_cmd(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ng_collect_rollouts: ")
        assert "  +resume_from_cache  (bool, default False)\n" in result.stdout
        assert "  +num_samples_in_parallel  (int | None, default None)\n" in result.stdout


def test_existing_output_is_cleared_only_after_a_notice(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, _ = weather_stack
    out = tmp_path / "old.jsonl"
    out.write_text('{"_ng_task_index": 3, "_ng_rollout_index": 0}\n' * 3)
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={WEATHER}",
        f"+output_jsonl_fpath={out}",
        "+limit=1",
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"note: {out} already holds 3 rollouts; clearing it and its side files "
        "(pass +resume_from_cache=true to continue it instead)\n"
    ) in result.stderr
    assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows(out)] == [(0, 0)]
    assert rows(out)[0]["agent_ref"] == {
        "type": "responses_api_agents",
        "name": "simple_weather_simple_agent",
    }


def test_resume_from_cache_reads_old_key_names(weather_stack: tuple[NgRun, str], tmp_path: Path) -> None:
    run, _ = weather_stack
    out = tmp_path / "legacy.jsonl"
    out.write_text('{"_ng_row_index": 0, "_ng_repeat_index": 0, "reward": 0.5}\n')
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={WEATHER}",
        f"+output_jsonl_fpath={out}",
        "+limit=2",
        "+resume_from_cache=true",
    )
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr
    metrics = json.loads((tmp_path / "legacy_aggregate_metrics.json").read_text())
    assert metrics["num_skipped_already_done"] == 1 and metrics["num_attempted_this_run"] == 1
    assert metrics["num_rollouts"] == 2 and metrics["reward"] == 0.75
    # Every resources server answers /aggregate_metrics (reward_profile over the run's rows).
    weather = metrics["resources_servers"]["simple_weather"]
    assert weather["key_metrics"] == {"mean/reward": 0.75}
    assert [r.get("_ng_task_index") for r in rows(out)] == [None, 1]


def test_agent_ref_routes_rows_without_agent_name(weather_stack: tuple[NgRun, str], tmp_path: Path) -> None:
    run, _ = weather_stack
    good = json.loads((PROJECT_ROOT / WEATHER).read_text().splitlines()[0])
    ref = {"type": "responses_api_agents", "name": "simple_weather_simple_agent"}
    source = tmp_path / "routed.jsonl"
    source.write_text(json.dumps({**good, "agent_ref": ref}) + "\n")
    out = tmp_path / "routed_out.jsonl"
    result = collect(run, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={out}")
    assert result.returncode == 0, result.stderr
    assert [r["reward"] for r in rows(out)] == [1.0]

    source.write_text(json.dumps({**good, "agent_ref": ref}) + "\n" + json.dumps(good) + "\n")
    result = collect(run, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={out}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: config key 'agent_name' (from command line): is required: input rows 1 have no "
        "agent_ref (give +agent_name=… or an agent_ref {type: responses_api_agents, name: …} in every row)"
    )


def test_every_rollout_failing_exits_1_with_the_top_reasons(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, _ = weather_stack
    source = tmp_path / "bad.jsonl"
    source.write_text('{"no_params": 1}\n' * 3)
    out = tmp_path / "bad_out.jsonl"
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={out}",
    )
    assert result.returncode == 1
    assert (
        "3 of 3 rollouts failed. Most common reasons:\n"
        f"  3 × invalid_input_row, e.g.: {source}:1: row has no 'responses_create_params' object\n"
    ) in result.stdout
    assert result.stdout.rstrip().endswith("error: every rollout failed")
    failures = rows(tmp_path / "bad_out_failures.jsonl")
    assert [f["_ng_failure_class"] for f in failures] == ["invalid_input_row"] * 3
    assert sorted(f["_ng_task_index"] for f in failures) == [0, 1, 2]


def test_max_failures_and_context_length_fallbacks(weather_stack: tuple[NgRun, str], tmp_path: Path) -> None:
    run, _ = weather_stack
    good = (PROJECT_ROOT / WEATHER).read_text().splitlines()[0]
    too_long = json.dumps({"responses_create_params": {"input": "weather " * 6000}})
    source = tmp_path / "mixed.jsonl"
    source.write_text("\n".join([good, too_long, "{not json", "{not json"]) + "\n")
    out = tmp_path / "mixed_out.jsonl"
    args = [
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={out}",
    ]
    result = collect(run, *args, "+max_failures=1")
    assert result.returncode == 1
    assert result.stdout.rstrip().endswith("error: 2 rollouts failed, more than +max_failures=1")
    metrics = json.loads((tmp_path / "mixed_out_aggregate_metrics.json").read_text())
    assert metrics["num_context_length_fallbacks"] == 1 and metrics["num_rollouts"] == 2
    assert metrics["failure_classes"] == {"invalid_input_row": 2}
    assert "1 rollouts hit the model's context length" in result.stdout
    assert collect(run, *args, "+max_failures=2").returncode == 0


def test_interleave_repeats_disable_aggregation_and_require_complete(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, _ = weather_stack
    out = tmp_path / "inter.jsonl"
    args = ["+agent_name=simple_weather_simple_agent", f"+output_jsonl_fpath={out}", "+concurrency=1"]
    result = collect(
        run,
        *args,
        f"+input_jsonl_fpath={WEATHER}",
        "+limit=2",
        "+num_repeats=2",
        "+interleave_repeats=true",
        "+disable_aggregation=true",
    )
    assert result.returncode == 0, result.stderr
    assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows(out)] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
    ]
    assert not (tmp_path / "inter_aggregate_metrics.json").exists()

    source = tmp_path / "one_bad.jsonl"
    source.write_text((PROJECT_ROOT / WEATHER).read_text().splitlines()[0] + "\n{not json\n")
    result = collect(run, *args, f"+input_jsonl_fpath={source}", "+require_complete=true")
    assert result.returncode == 1
    assert result.stdout.rstrip().endswith("error: 1 rollouts missing and +require_complete=true")


def _count(url: str, sample: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_server_counts_its_requests_on_metrics(
    weather_stack: tuple[NgRun, str], tmp_path: Path
) -> None:
    run, _ = weather_stack
    agent, resources = run.url_of("simple_weather_simple_agent"), run.url_of("simple_weather")
    runs = 'nemo_gym_requests_total{route="/run",status="200"}'
    verifies = 'nemo_gym_requests_total{route="/verify",status="200"}'
    before = (_count(agent, runs), _count(resources, verifies))
    out = tmp_path / "roll.jsonl"
    result = collect(
        run,
        "+agent_name=simple_weather_simple_agent",
        f"+input_jsonl_fpath={WEATHER}",
        f"+output_jsonl_fpath={out}",
        "+limit=3",
        "+num_repeats=2",
    )
    assert result.returncode == 0, result.stderr
    assert len(rows(out)) == 6
    assert (_count(agent, runs) - before[0], _count(resources, verifies) - before[1]) == (6.0, 6.0)
    assert _count(agent, 'nemo_gym_request_duration_seconds_count{route="/run"}') >= 6.0
