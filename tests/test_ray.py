"""Ray only where it is used: detection from source, and ng_run with a local Ray head."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from nemo_gym.ray_support import server_needs_ray
from nemo_gym.testing.processes import ng_run

ROOT = Path(__file__).resolve().parents[1]
RAY_SERVER = ROOT / "tests" / "servers" / "ray_server"


def _server(tmp_path: Path, source: str, helper: str | None = None) -> Path:
    folder = tmp_path / "srv"
    (folder / "tests").mkdir(parents=True)
    (folder / "app.py").write_text(source)
    (folder / "tests" / "test_app.py").write_text("import ray\n")  # tests never count
    if helper is not None:
        (folder / "helpers.py").write_text(helper)
    return folder / "app.py"


@pytest.mark.parametrize(
    ("source", "helper", "expected"),
    [
        ("import json\nclass S:\n    pass\n", None, False),
        ("import ray\nclass S:\n    pass\n", None, True),
        ("from ray import remote\n", None, True),
        ("import helpers\n", "import ray.util\n", True),  # a module of the server's own
        ("import json\n", "import ray.util\n", False),  # one the entrypoint does not import
        ("import ray\nclass S:\n    ray_enabled = False\n", None, False),  # declared wins
        ("class S:\n    ray_enabled: ClassVar[bool] = True\n", None, True),
        ("from .ray import x\n", None, False),  # a relative module named ray is not Ray
    ],
)
def test_server_needs_ray_reads_the_source(
    tmp_path: Path, source: str, helper: str | None, expected: bool
) -> None:
    assert server_needs_ray(_server(tmp_path, source, helper)) is expected


def test_our_servers_do_not_need_ray() -> None:
    for app in [
        "responses_api_models/vllm_model/app.py",
        "responses_api_agents/simple_agent/app.py",
        "resources_servers/simple_weather/app.py",
        "resources_servers/equivalence_llm_judge/app.py",
    ]:
        assert server_needs_ray(ROOT / app) is False, app


@pytest.mark.e2e
@pytest.mark.ray
def test_ng_run_starts_a_local_ray_head_and_servers_join_it(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'nemo-gym[ray]'")
    config = tmp_path / "ray.yaml"
    config.write_text(
        f"ray_square:\n  resources_servers:\n    ray_server:\n      entrypoint: {RAY_SERVER / 'app.py'}\n"
    )
    with ng_run(f"+config_paths=[{config}]", timeout=120) as run:
        assert "Started the Ray cluster at " in run.output and "for: ray_square" in run.output
        address = run.output.split("Started the Ray cluster at ", 1)[1].split()[0]
        answer = httpx.post(run.url_of("ray_square") + "/square", json={"x": 7}, timeout=60).json()
    assert answer["value"] == 49
    assert answer["address"] == address  # the server joined ng_run's cluster, not a new one
    assert answer["pid"] != answer["server_pid"]  # the task ran in a Ray worker
