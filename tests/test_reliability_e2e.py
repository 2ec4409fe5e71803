"""Upstream faults through a real adapter process: timeouts, truncation, 503 bursts, malformed
JSON, a dead upstream taken back when healthy — and secrets that never leak."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import ng_run, simulator, start_simulator, stop_process

pytestmark = pytest.mark.e2e
VLLM = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]"
KEY = "sk-FAKE-distinctive-7c1e9b2a55"
ADAPTER = "+policy_model.responses_api_models.vllm_model"


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[str, str]]:
    with simulator("--api-key", KEY) as (sim_url, _):
        with ng_run(
            VLLM,
            f"+policy_base_url={sim_url}",
            f"+policy_api_key={KEY}",
            "+policy_model_name=sim-model",
            f"{ADAPTER}.timeouts.read=1.5",
            f"{ADAPTER}.max_retries=3",
            f"{ADAPTER}.retry_backoff=0.02",
            f"{ADAPTER}.access_log=true",
        ) as run:
            yield run.url_of("policy_model"), sim_url.removesuffix("/v1")


def fault(sim: str, **spec: object) -> int:
    httpx.post(f"{sim}/sim/faults", json=spec)
    return httpx.get(f"{sim}/sim/stats").json()["requests"]


def requests_since(sim: str, before: int) -> int:
    return httpx.get(f"{sim}/sim/stats").json()["requests"] - before


def test_stalled_upstream_is_a_504_naming_it(faulty: tuple[str, str]) -> None:
    url, sim = faulty
    before = fault(sim, mode="stall", count=1, stall_s=30)
    started = time.monotonic()
    r = httpx.post(f"{url}/v1/responses", json={"input": "hi"}, timeout=30)
    assert r.status_code == 504 and 1.4 < time.monotonic() - started < 10
    assert r.json()["error"]["message"] == f"upstream {sim}/v1 did not answer within the read timeout (1.5s)"
    assert requests_since(sim, before) == 1  # not retried: the generation may still be running


def test_response_cut_mid_body_is_502_and_never_resent(faulty: tuple[str, str]) -> None:
    url, sim = faulty
    before = fault(sim, mode="truncate", count=1)
    r = httpx.post(f"{url}/v1/responses", json={"input": "hi"})
    assert r.status_code == 502 and r.json()["error"]["message"].startswith(
        f"upstream {sim}/v1 failed mid-response"
    )
    assert requests_since(sim, before) == 1


def test_503_bursts_are_retried_then_reported(faulty: tuple[str, str]) -> None:
    url, sim = faulty
    before = fault(sim, mode="status", status=503, count=2)
    assert httpx.post(f"{url}/v1/responses", json={"input": "hi"}).status_code == 200
    assert requests_since(sim, before) == 3
    before = fault(sim, mode="status", status=503, count=10)
    r = httpx.post(f"{url}/v1/responses", json={"input": "hi"})
    assert r.status_code == 503 and r.json()["error"]["message"].startswith(
        f"upstream {sim}/v1 returned 503: simulated fault"
    )
    assert requests_since(sim, before) == 4  # 1 + max_retries, bounded
    fault(sim, mode=None)


def test_malformed_json_is_502(faulty: tuple[str, str]) -> None:
    url, sim = faulty
    fault(sim, mode="malformed", count=1)
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert (
        r.status_code == 502
        and r.json()["error"]["message"] == f"upstream {sim}/v1 returned malformed JSON (HTTP 200)"
    )


def test_secret_never_leaks(faulty: tuple[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A distinctive key: accepted upstream, yet absent from every body, log and config dump."""
    url, sim = faulty
    texts = [httpx.post(f"{url}/v1/responses", json={"input": "hi"}).text]
    texts.append(httpx.post(f"{url}/v1/responses", json={"input": [{"type": "bogus"}]}).text)
    fault(sim, mode="status", status=500, count=10)
    texts.append(httpx.post(f"{url}/v1/responses", json={"input": "hi"}).text)
    fault(sim, mode=None)
    with simulator("--api-key", "another-key") as (other, _):  # wrong key → upstream 401
        with ng_run(
            VLLM,
            f"+policy_base_url={other}",
            f"+policy_api_key={KEY}",
            "+policy_model_name=sim-model",
            f"{ADAPTER}.access_log=true",
        ) as run:
            r = httpx.post(f"{run.url_of('policy_model')}/v1/responses", json={"input": "hi"})
            assert r.status_code == 401 and r.json()["error"]["message"] == "Unauthorized"
            texts += [r.text, httpx.get(f"http://127.0.0.1:{run.head_port}/global_config_dict_yaml").text]
            time.sleep(0.3)
            texts.append(run.output)
    env = dict(os.environ, NEMO_GYM_ENV_YAML="none")
    dump = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.ng_dump_config",
            VLLM,
            "+policy_base_url=http://x/v1",
            f"+policy_api_key={KEY}",
            "+policy_model_name=m",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
    )
    assert "api_key: <redacted>" in dump.stdout
    texts += [dump.stdout, dump.stderr]
    assert all(KEY not in t for t in texts)
    assert "POST /v1/responses" in texts[-3]  # the access log was on, and still clean


def test_dead_upstream_is_taken_back_when_healthy() -> None:
    port_b = free_port()
    with simulator("--instance-id", "A") as (url_a, _):
        url_b = f"http://127.0.0.1:{port_b}/v1"
        proc_b = start_simulator(port_b, "--instance-id", "B")
        try:
            with ng_run(
                VLLM,
                f"+policy_base_url=[{url_a},{url_b}]",
                "+policy_api_key=EMPTY",
                "+policy_model_name=sim-model",
                f"{ADAPTER}.retry_backoff=0.01",
            ) as run:
                url = run.url_of("policy_model")
                stop_process(proc_b)
                for _ in range(6):
                    assert httpx.post(f"{url}/v1/responses", json={"input": "hi"}).status_code == 200
                report = httpx.get(f"{url}/health?upstream=true").json()["upstreams"]
                assert [(u["status"], u["routed"]) for u in report] == [
                    ("healthy", True),
                    ("unhealthy", False),
                ]
                assert report[1]["error"].startswith(f"cannot connect to 127.0.0.1:{port_b}: ")
                proc_b = start_simulator(port_b, "--instance-id", "B")
                deadline = time.monotonic() + 10
                while (
                    time.monotonic() < deadline
                    and not httpx.get(f"{url}/health?upstream=true").json()["upstreams"][1]["routed"]
                ):
                    time.sleep(0.2)
                for _ in range(4):
                    assert httpx.post(f"{url}/v1/responses", json={"input": "hi"}).status_code == 200
                assert (
                    httpx.get(f"http://127.0.0.1:{port_b}/sim/stats").json()["requests"] == 2
                )  # new sessions reach B again
        finally:
            stop_process(proc_b)


def test_connection_closed_before_an_answer_is_retried_once(faulty: tuple[str, str]) -> None:
    """A close with no answer is retried (at once when it is the keep-alive race, else with
    backoff: which one is decided by timing, tested exactly in test_upstream_retries.py)."""
    url, sim = faulty
    before = fault(sim, mode="drop", count=1)
    r = httpx.post(f"{url}/v1/responses", json={"input": "hi"})
    assert r.status_code == 200 and requests_since(sim, before) == 2
