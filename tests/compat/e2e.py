"""Stage (b) of the compat tier: NeMo Gym 0.7.0's environments end to end on our framework.

Each case is the simulator → `ng_run` (our vllm_model + a config from the wheel: a resources
server's, an agent's, or an `environments/` bundle's) → `ng_collect_rollouts` on the case's example
rows, and passes when every row is written with a numeric reward and nothing failed. Servers the
wheel has and we do not are found in it through `NEMO_GYM_EXTRA_ROOTS`; servers we also ship
(simple_agent, legacy_agent, ...) are ours unless the case names them in `wheel_impls`, which
points their entrypoints at the wheel's copy. ng_run's log is kept at CACHE/e2e/<case>.ng_run.log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nemo_gym.config import PROJECT_ROOT

SERVER_KINDS = ("resources_servers", "responses_api_agents", "responses_api_models", "environment_servers")
OUR_MODEL_CONFIG = PROJECT_ROOT / "responses_api_models/vllm_model/configs/vllm_model.yaml"
TRAINING_MODEL_CONFIG = PROJECT_ROOT / "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"
ENVIRONMENT_SERVER_STAMP = "_ng_environment_server"


@dataclass(frozen=True)
class Case:
    """One end-to-end run. `config` and `data` are relative to the wheel (absolute paths as they are)."""

    id: str
    # What the case runs end to end: `kind/name` of a server, or `environments/<bundle>`.
    proves: tuple[str, ...]
    config: str
    # The agent instance rows go to; None: the config's first agent.
    agent: str | None = None
    data: str | None = None
    extra: tuple[str, ...] = ()
    # `kind/name` of servers we also ship whose wheel copy this case runs instead of ours.
    wheel_impls: tuple[str, ...] = ()
    # Servers (`package.name`) imported as the wheel's copies though we ship one too (compat_paths).
    wheel_packages: tuple[str, ...] = ()
    limit: int | None = None
    # A config of the case's own (YAML; `config` is then ignored): a composition no wheel config spells out.
    config_text: str | None = None
    # The agent runs model-written commands in a sandbox (the local provider).
    sandboxed: bool = False
    # Every row must have been routed through this environment server (its `_ng_environment_server`).
    through: str | None = None
    # Our model server config (the training one returns token ids and log-probs).
    model_config: Path = OUR_MODEL_CONFIG


def rs(name: str, config: str | None = None, agent: str | None = None, *extra: str) -> Case:
    """A resources server with the agent its own config pairs it with."""
    config = config or f"{name}.yaml"
    return Case(
        name,
        (f"resources_servers/{name}",),
        f"resources_servers/{name}/configs/{config}",
        agent,
        extra=tuple(extra),
    )


def _wheel(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def instances(config: Path, root: Path | None = None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """instance → (kind, implementation, block) of the config's servers, nested `config_paths`
    (relative to the config or to `root`) included; the including config wins a name."""
    data = yaml.safe_load(config.read_text()) or {}
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    nested = data.get("config_paths") or []
    for entry in [nested] if isinstance(nested, str) else nested:
        for base in (config.parent, root):
            if base is not None and (base / str(entry)).is_file():
                found.update(instances(base / str(entry), root))
                break
    for inst, block in data.items():
        if not isinstance(block, dict):
            continue
        for kind in SERVER_KINDS:
            for impl, body in (block.get(kind) or {}).items():
                found[str(inst)] = (kind, str(impl), body if isinstance(body, dict) else {})
    return found


def example_data(root: Path, case: Case, config: Path, agent: str) -> Path:
    """The case's rows: given, else the agent's `example` dataset, else the server's data/example.jsonl."""
    if case.data:
        return _wheel(root, case.data)
    own = instances(config, root).get(agent)
    for dataset in (own[2].get("datasets") or []) if own else []:
        if isinstance(dataset, dict) and dataset.get("type") == "example":
            return root / str(dataset["jsonl_fpath"])
    return (
        config.parent.parent / "data" / "example.jsonl"
        if config.parent.name == "configs"
        else (config.parent / "data" / "example.jsonl")
    )


def plan(root: Path, case: Case, cache: Path) -> tuple[Path, str, list[str]]:
    """(the case's config file, its agent, overrides pointing `wheel_impls` at the wheel's copies)."""
    config = _wheel(root, case.config)
    if case.config_text:
        config = cache / "e2e" / f"{case.id}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(case.config_text)
    overrides = []
    found = instances(config, root)
    for inst, (kind, impl, body) in found.items():
        if f"{kind}/{impl}" in case.wheel_impls:
            entry = body.get("entrypoint", "app.py")
            overrides.append(f"+{inst}.{kind}.{impl}.entrypoint={root / kind / impl / entry}")
    agents = [inst for inst, (kind, _, _) in found.items() if kind == "responses_api_agents"]
    agent = case.agent or (agents[0] if agents else "")
    if not agent:
        raise E2EError(f"{config} declares no agent; name one in the case")
    return config, agent, overrides


class E2EError(RuntimeError):
    """ng_run did not come up; the message's first line is the most telling line of its log."""


def telling_line(log_text: str) -> str:
    """The first real error in an ng_run log (not the KeyboardInterrupts of the shutdown)."""
    lines = log_text.splitlines()
    for pattern in (
        r"config error|ConfigError",
        r"^\[[^\]]+\] \w+(Error|Exception)\b",
        r"Error|error:|failed",
    ):
        for line in lines:
            if re.search(pattern, line) and "KeyboardInterrupt" not in line:
                return line.strip()[:300]
    return (lines[-1].strip() if lines else "ng_run exited without output")[:300]


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while "servers ready" not in log_path.read_text(errors="replace"):
        text = log_path.read_text(errors="replace")
        if proc.poll() is not None:
            raise E2EError(f"ng_run exited {proc.returncode}: {telling_line(text)}\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise E2EError(f"ng_run not ready after {timeout:.0f}s: {telling_line(text)}\n{text[-4000:]}")
        time.sleep(0.1)


def _rows(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def run(root: Path, cache: Path, case: Case, out_dir: Path) -> dict:
    """Run one case; the outcome `verdict` judges."""
    from nemo_gym.config import free_port
    from nemo_gym.testing.processes import collect_rollouts_command, hermetic_env, simulator, stop_process

    config, agent, overrides = plan(root, case, cache)
    data = example_data(root, case, config, agent)
    lines = [line for line in data.read_text().splitlines() if line.strip()]
    n_rows = min(len(lines), case.limit or len(lines))
    out = out_dir / f"{case.id}.jsonl"
    log_path = cache / "e2e" / f"{case.id}.ng_run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        NEMO_GYM_ENV_YAML="none",
        PYTHONUNBUFFERED="1",
        NG_COMPAT_EXTRA_ROOTS=str(root),
        NEMO_GYM_EXTRA_ROOTS=str(root),
    )
    if case.wheel_packages:
        env["NG_COMPAT_WHEEL_PACKAGES"] = ",".join(case.wheel_packages)
    with simulator() as (sim_url, _):
        head_port = free_port()
        args = [f"+config_paths=[{case.model_config},{config}]", f"+policy_base_url={sim_url}"]
        args += ["+policy_api_key=EMPTY", "+policy_model_name=sim-model", *overrides, *case.extra]
        args.append(f"+head_server.port={head_port}")
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nemo_gym.cli.ng_run", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                env=env,
            )
            try:
                _wait_ready(proc, log_path, 180)
                command = collect_rollouts_command(
                    head_port,
                    f"+agent_name={agent}",
                    f"+input_jsonl_fpath={data}",
                    f"+output_jsonl_fpath={out}",
                    *([f"+limit={case.limit}"] if case.limit else []),
                )
                result = subprocess.run(
                    command, cwd=PROJECT_ROOT, env=hermetic_env(), capture_output=True, text=True, timeout=900
                )
            finally:
                stop_process(proc)
    return {
        "returncode": result.returncode,
        "stderr": result.stderr[-3000:],
        "n_input": n_rows,
        "rows": _rows(out),
        "failures": _rows(out.with_name(f"{case.id}_failures.jsonl")),
        "ng_run_log_tail": log_path.read_text(errors="replace")[-3000:],
        "ng_run_log": str(log_path),
    }


def first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def verdict(case: Case, outcome: dict) -> dict:
    """One record: every example row written, with a numeric reward, nothing in failures."""
    rows = outcome["rows"]
    numeric = [
        isinstance(r.get("reward"), int | float) and not isinstance(r.get("reward"), bool) for r in rows
    ]
    errors = [str(f.get("_ng_failure_message", f.get("error", "")))[:300] for f in outcome["failures"]]
    if errors:
        error = f"{len(errors)} row(s) failed: {first_line(errors[0])}"
    elif outcome["returncode"] != 0:
        tail = [ln for ln in outcome["stderr"].splitlines() if ln.strip() and "rollouts:" not in ln]
        error = f"ng_collect_rollouts exit {outcome['returncode']}: {tail[-1] if tail else ''}"[:300]
    elif len(rows) != outcome["n_input"]:
        error = f"{len(rows)} of {outcome['n_input']} rows written"
    elif not all(numeric):
        error = f"non-numeric reward: {rows[numeric.index(False)].get('reward')!r}"
    elif case.through and any(r.get(ENVIRONMENT_SERVER_STAMP) != case.through for r in rows):
        stamps = sorted({str(r.get(ENVIRONMENT_SERVER_STAMP)) for r in rows})
        error = f"rows were not routed through {case.through} (their {ENVIRONMENT_SERVER_STAMP}: {', '.join(stamps)})"
    else:
        error = ""
    return {
        "env": case.id,
        "proves": list(case.proves),
        "status": "ok" if not error else "failed",
        "error": error,
        "returncode": outcome["returncode"],
        "n_input": outcome["n_input"],
        "n_rows": len(rows),
        "failures": errors[:3],
        "rewards": [r.get("reward") for r in rows][:10],
        "stderr_tail": outcome["stderr"][-500:],
    }


# ---------------------------------------------------------------------------- the cases


def agent_case(name: str, agent_impl: str, config: str, agent: str | None = None, **more: Any) -> Case:
    """A NeMo Gym agent (not ours) with the resources server a wheel config pairs it with."""
    server = config.split("/")[1]
    return Case(
        name, (f"responses_api_agents/{agent_impl}", f"resources_servers/{server}"), config, agent, **more
    )


def bundle(name: str, agent: str | None = None, also: tuple[str, ...] = (), **more: Any) -> Case:
    """An `environments/` bundle as `ng_run` starts it (nested configs found in the wheel)."""
    proves = (f"environments/{name}", *also)
    return Case(f"bundle_{name}", proves, f"environments/{name}/config.yaml", agent, **more)


# OpenCode run by `opencode_sandboxed_agent` in a sandbox of our `local` provider (the binary this
# machine has; the agent would otherwise download it), on the OpenCode math bundle's verifier.
# Our local provider enforces the memory a sandbox asks for (NeMo Gym's ignores it), and the
# 512 MiB data limit of the agent's own config is less than OpenCode's runtime (Bun) reserves, so
# the case lifts it; one rollout at a time, since local sandboxes share the user's OpenCode database.
OPENCODE_SANDBOXED = f"""
config_paths:
  - {PROJECT_ROOT / "nemo_gym/sandbox/providers/local/configs/local.yaml"}
  - responses_api_agents/opencode_sandboxed_agent/configs/opencode_sandboxed_agent.yaml
math_with_judge:
  resources_servers:
    math_with_judge:
      entrypoint: app.py
      judge_model_server: {{type: responses_api_models, name: policy_model}}
      judge_responses_create_params: {{input: []}}
      should_use_judge: false
opencode_math_sandboxed_agent:
  _inherit_from: opencode_sandboxed_agent
  responses_api_agents:
    opencode_sandboxed_agent:
      resources_server: {{type: resources_servers, name: math_with_judge}}
      sandbox_provider: sandbox
      preinstalled_opencode: true
      concurrency: 1
      sandbox_config: {{resources: {{memory_mib: null}}}}
"""

CASES: list[Case] = [
    # Resources servers with our simple_agent (their configs' agent).
    rs("example_multi_step"),
    rs("example_session_state_mgmt"),
    rs("example_tool_call_multireward"),
    rs("mcqa"),
    rs("structured_outputs", "structured_outputs_json.yaml"),
    rs("workplace_assistant"),
    rs("calendar"),
    rs("xlam_fc"),
    rs("code_gen"),
    rs(
        "math_with_judge",
        None,
        None,
        "+math_with_judge.resources_servers.math_with_judge.should_use_judge=true",
    ),
    rs("string_match"),
    rs("gpqa_diamond"),
    rs("equivalence_rule", "lc.yaml"),
    rs("single_step_tool_use_with_argument_comparison"),
    # NeMo Gym's own agents (their wheel copies), each with a resources server it pairs with.
    agent_case(
        "gymnasium_blackjack", "gymnasium_agent", "resources_servers/blackjack/configs/blackjack.yaml"
    ),
    agent_case(
        "tool_simulation",
        "tool_simulation_agent",
        "resources_servers/single_step_tool_use_with_argument_comparison/configs/"
        "toolcall_schema_single_step_tool_use_with_argument_comparison.yaml",
        data="resources_servers/single_step_tool_use_with_argument_comparison/data/example.jsonl",
    ),
    agent_case(
        "non_executing_structured_outputs",
        "non_executing_simple_agent",
        "resources_servers/structured_outputs/configs/structured_outputs_v4.yaml",
    ),
    agent_case("speed_bench", "speed_bench_agent", "resources_servers/speed_bench/configs/speed_bench.yaml"),
    agent_case(
        "reasoning_gym_langgraph",
        "langgraph_agent",
        "resources_servers/reasoning_gym/configs/reflection_agent.yaml",
    ),
    Case(
        "opencode_sandboxed_local",
        ("responses_api_agents/opencode_sandboxed_agent", "resources_servers/math_with_judge"),
        "",
        "opencode_math_sandboxed_agent",
        data="environments/opencode_math/data/example.jsonl",
        config_text=OPENCODE_SANDBOXED,
        sandboxed=True,
        limit=2,
    ),
    # NeMo Gym's environment servers (their wheel copies) in front of an agent.
    Case(
        "legacy_agent_calendar",
        ("environment_servers/legacy_agent", "environments/calendar"),
        "environments/calendar/config.yaml",
        "calendar_environment_server",
        wheel_impls=("environment_servers/legacy_agent",),
    ),
    # Rows name the agent; rollout collection routes them through the environment server that
    # fronts it, as NeMo Gym's does, and each row records that server.
    Case(
        "single_agent_turn_example_single_tool_call",
        ("environment_servers/single_agent_turn", "environment_servers/single_agent_turn_legacy"),
        "resources_servers/example_single_tool_call/configs/example_single_tool_call_single_agent_turn.yaml",
        "example_single_tool_call_session_agent",
        data="resources_servers/example_single_tool_call/data/example.jsonl",
        wheel_packages=("environment_servers.single_agent_turn",),
        through="example_single_tool_call_single_agent_turn",
    ),
    # environments/ bundles.
    bundle("example_single_tool_call"),
    bundle("workplace_assistant"),
    bundle("blackjack", also=("responses_api_agents/gymnasium_agent",)),
    bundle("code_gen"),
    bundle("calendar_v2"),
    bundle("circle_count"),
    bundle("arc_agi"),
    bundle("reasoning_gym"),
    bundle("langgraph_rewoo_math", also=("responses_api_agents/langgraph_agent",)),
]
