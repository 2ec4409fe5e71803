"""Environment bundles (`environments/<name>/{config.yaml,manifest.yaml}`): manifests validated
at config load, nested config paths resolved through `NEMO_GYM_EXTRA_ROOTS`, and `ng_run`
starting a bundle whose rows then run end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from nemo_gym.config import ConfigError, discover_instances, load_config
from nemo_gym.environment.manifest import EnvironmentManifest, ManifestError, dump_manifest, load_manifest
from nemo_gym.testing.processes import hermetic_env, ng_run, simulator

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
REFERENCE = Path("/work/ref/ng070")


@pytest.fixture
def bundles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of our fixture bundles as an extra root, so tests may break them."""
    root = tmp_path / "plugins"
    shutil.copytree(FIXTURES / "environments", root / "environments")
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(root))
    monkeypatch.setenv("NEMO_GYM_ENV_YAML", "none")
    return root


def edit_manifest(root: Path, name: str, change: dict) -> Path:
    path = root / "environments" / name / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(data))
    return path


def test_bundle_config_paths_resolve_through_extra_roots(bundles: Path) -> None:
    loaded = load_config(
        [
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,environments/weather/config.yaml]",
            "+policy_base_url=http://127.0.0.1:1/v1",
            "+policy_api_key=EMPTY",
            "+policy_model_name=m",
        ],
        cwd=ROOT,
    )
    names = [
        (i.name, i.server_type, i.entrypoint.relative_to(ROOT).as_posix()) for i in discover_instances(loaded)
    ]
    assert names == [
        ("policy_model", "responses_api_models", "responses_api_models/vllm_model/app.py"),
        ("simple_weather", "resources_servers", "resources_servers/simple_weather/app.py"),
        ("simple_weather_simple_agent", "responses_api_agents", "responses_api_agents/simple_agent/app.py"),
        (
            "simple_weather_environment_server",
            "environment_servers",
            "environment_servers/legacy_agent/app.py",
        ),
    ]
    assert loaded.files == [
        str(ROOT / "responses_api_models/vllm_model/configs/vllm_model.yaml"),
        str(ROOT / "resources_servers/simple_weather/configs/simple_weather.yaml"),
        str(bundles / "environments/weather/config.yaml"),
    ]


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"reward.range": [1.0, 0.0]}, "reward", "reward.range must be [lower, upper] with lower <= upper"),
        ({"domian": "agent"}, "domian", "is not a manifest key; did you mean `domain`?"),
        ({"licensing": "not-a-license"}, "licensing", "licensing must be an SPDX license expression"),
        ({"datasets": []}, "datasets", "List should have at least 1 item"),
        ({"resources_server": None}, None, "needs: resources_server"),
    ],
)
def test_a_bad_manifest_fails_at_load_naming_key_and_file(
    bundles: Path, change: dict, key: str | None, message: str
) -> None:
    path = edit_manifest(bundles, "weather", change)
    with pytest.raises(ManifestError) as caught:
        load_config(["+config_paths=[environments/weather/config.yaml]"], cwd=ROOT)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.source == str(path) and caught.value.key == key
    assert message in str(caught.value)


def test_manifest_model_rules_and_round_trip() -> None:
    manifest = load_manifest(FIXTURES / "environments/weather/manifest.yaml")
    assert (manifest.kind, manifest.integration_profile, manifest.licensing) == (
        "environment",
        "custom-gym-verifier",
        "Apache-2.0",
    )
    assert EnvironmentManifest.model_validate(yaml.safe_load(dump_manifest(manifest))) == manifest
    data = yaml.safe_load((FIXTURES / "environments/weather/manifest.yaml").read_text())
    with pytest.raises(ValueError, match="needs: canonical_split, standard_prompt_config"):
        EnvironmentManifest.model_validate({**data, "kind": "benchmark"})
    with pytest.raises(ValueError, match="authors must not repeat"):
        EnvironmentManifest.model_validate({**data, "authors": ["a", "a"]})


def test_ng_run_with_a_bad_manifest_exits_naming_it(bundles: Path) -> None:
    path = edit_manifest(bundles, "weather", {"reward.higher_is_better": "sometimes"})
    done = subprocess.run(
        [sys.executable, "-m", "nemo_gym.cli.ng_run", "+config_paths=[environments/weather/config.yaml]"],
        cwd=ROOT,
        env={**hermetic_env(), "NEMO_GYM_EXTRA_ROOTS": str(bundles)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        f"config key 'reward.higher_is_better' (from {path}): Input should be a valid boolean" in done.stderr
    )


@pytest.mark.e2e
def test_ng_run_starts_bundles_and_their_rows_run(bundles: Path) -> None:
    weather_row = json.loads(
        (ROOT / "resources_servers/simple_weather/data/example.jsonl").read_text().splitlines()[0]
    )
    with simulator() as (url, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,"
            "environments/weather/config.yaml,environments/judge/config.yaml]",
            f"+policy_base_url={url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            "+equivalence_llm_judge.resources_servers.equivalence_llm_judge.judge_model_server.name=policy_model",
            timeout=120,
        ) as run:
            assert {i["name"]: i["status"] for i in run.instances()} == {
                "policy_model": "ready",
                "simple_weather": "ready",
                "simple_weather_simple_agent": "ready",
                "simple_weather_environment_server": "ready",
                "equivalence_llm_judge": "ready",
                "equivalence_llm_judge_simple_agent": "ready",
                "judge_turn": "ready",
            }
            relayed = httpx.post(
                run.url_of("simple_weather_environment_server") + "/run", json=weather_row, timeout=60
            ).json()
            episode = {
                "episode_id": {"rollout_id": "0-0"},
                "task": {
                    "task_id": {"taskset": "judge:example", "task_id": "0"},
                    "task_input": {
                        "responses_create_params": {"input": "What is 2+2?"},
                        "expected_answer": "Simulated answer to: What is 2+2?",
                    },
                },
            }
            judged = httpx.post(run.url_of("judge_turn") + "/run", json=episode, timeout=60).json()
    assert relayed["reward"] == 1.0
    assert judged["failure"] is None and judged["result"]["reward"] == 1.0
    assert judged["result"]["expected_answer"] == "Simulated answer to: What is 2+2?"


needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"NeMo Gym 0.7.0 is not unpacked at {REFERENCE}"
)


@needs_reference
def test_every_reference_manifest_validates() -> None:
    manifests = sorted(REFERENCE.glob("environments/*/manifest.yaml")) + sorted(
        REFERENCE.glob("benchmarks/*/manifest.yaml")
    )
    assert len(manifests) > 100
    for path in manifests:
        load_manifest(path)


@needs_reference
@pytest.mark.e2e
def test_a_reference_bundle_starts_and_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_GYM_EXTRA_ROOTS", str(REFERENCE))
    rows = (
        (REFERENCE / "resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()
    )
    with simulator() as (url, _):
        with ng_run(
            "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml,"
            "environments/example_single_tool_call/config.yaml]",
            f"+policy_base_url={url}",
            "+policy_api_key=EMPTY",
            "+policy_model_name=sim-model",
            timeout=120,
        ) as run:
            relay = run.url_of("example_single_tool_call_environment_server")
            rewards = [
                httpx.post(relay + "/run", json=json.loads(row), timeout=60).json()["reward"]
                for row in rows[:3]
            ]
    assert rewards == [1.0, 1.0, 1.0]
