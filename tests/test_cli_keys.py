"""Every command refuses keys it does not know (naming the closest one) and explains itself on --help."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from nemo_gym.cli import (
    ng_aggregate_rollouts,
    ng_list,
    ng_materialize_prompts,
    ng_prepare_data,
    ng_reverify_rollouts,
    ng_reward_profile,
    ng_validate,
)
from nemo_gym.cli import ng_collect_rollouts as collect_rollouts
from nemo_gym.cli import ng_dump_config as dump_config
from nemo_gym.cli import ng_help as help
from nemo_gym.cli import ng_run as run
from nemo_gym.cli import ng_status as status
from nemo_gym.cli import ng_test as test
from nemo_gym.cli import ng_version as version
from nemo_gym.cli.common import run_cli
from nemo_gym.cli.keys import check_command_line, closest

COMMANDS = {
    "ng_run": (run, run.RunKeys),
    "ng_collect_rollouts": (collect_rollouts, collect_rollouts.CollectRolloutsKeys),
    "ng_status": (status, status.StatusKeys),
    "ng_dump_config": (dump_config, dump_config.DumpConfigKeys),
    "ng_test": (test, test.NgTestKeys),
    "ng_version": (version, version.VersionKeys),
    "ng_help": (help, help.HelpKeys),
    "ng_list": (ng_list, ng_list.ListKeys),
    "ng_validate": (ng_validate, ng_validate.ValidateKeys),
    "ng_aggregate_rollouts": (ng_aggregate_rollouts, ng_aggregate_rollouts.AggregateRolloutsKeys),
    "ng_reward_profile": (ng_reward_profile, ng_reward_profile.RewardProfileKeys),
    "ng_reverify_rollouts": (ng_reverify_rollouts, ng_reverify_rollouts.ReverifyKeys),
    "ng_prepare_data": (ng_prepare_data, ng_prepare_data.PrepareDataKeys),
    "ng_materialize_prompts": (ng_materialize_prompts, ng_materialize_prompts.MaterializePromptsKeys),
}
VLLM = "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml]"


def invoke(module: object, argv: list[str]) -> int:
    main: Callable[[list[str]], int] = module.main  # type: ignore[attr-defined]
    keys: type[BaseModel] = next(m for n, (mod, m) in COMMANDS.items() if mod is module)
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv, command=module.COMMAND, summary=module.SUMMARY, keys=keys)  # type: ignore[attr-defined]
    return int(info.value.code or 0)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "-h", "+help=true"])
def test_help_lists_every_key_with_type_default_description_and_exits_0(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module, keys = COMMANDS[command]
    assert invoke(module, [flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{command}: {module.SUMMARY}\n\nusage: {command} [+key=value ...]\n\nkeys:\n")
    for name, field in keys.model_fields.items():
        assert f"  +{field.alias or name}  (" in out
        assert f"      {field.description}\n" in out


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        (
            "ng_collect_rollouts",
            ["+concurency=8"],
            "'concurency' (from command line): is not a key of "
            "ng_collect_rollouts; did you mean `concurrency`?",
        ),
        ("ng_collect_rollouts", ["+resume_from_cach=true"], "did you mean `resume_from_cache`?"),
        ("ng_collect_rollouts", ["+input_jsonl_path=x"], "did you mean `input_jsonl_fpath`?"),
        ("ng_run", [VLLM, "+startup_timout=5"], "is not a key of ng_run; did you mean `startup_timeout`?"),
        ("ng_run", [VLLM, "+require_upstream=true"], "did you mean `require_upstreams`?"),
        ("ng_test", ["+entrypont=x"], "is not a key of ng_test; did you mean `entrypoint`?"),
        ("ng_status", ["+head_servr.port=1"], "is not a key of ng_status; did you mean `head_server`?"),
        ("ng_dump_config", [VLLM, "+confg_paths=[]"], "did you mean `config_paths`?"),
        ("ng_version", ["+jsn=true"], "is not a key of ng_version; did you mean `json`?"),
        (
            "ng_version",
            ["+zzz=1"],
            "'zzz' (from command line): is not a key of ng_version (run ng_version --help",
        ),
        ("ng_run", [VLLM, "+port_rang_low=5000"], "is not a key of ng_run; did you mean `port_range_low`?"),
        ("ng_run", [VLLM, "+hf_tokn=x"], "is not a key of ng_run; did you mean `hf_token`?"),
        ("ng_status", ["+dry_runn=true"], "is not a key of ng_status; did you mean `dry_run`?"),
    ],
)
def test_unknown_key_is_an_error_naming_the_closest_known_key(
    command: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module, _ = COMMANDS[command]
    assert invoke(module, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: config key '") and message in err


def test_config_names_are_not_refused_as_flags() -> None:
    """Server instances, env.yaml values used by `${…}`, and instances given whole on the command line."""
    overrides = check_command_line(
        "ng_run",
        run.RunKeys,
        [
            VLLM,
            "+policy_base_url=http://h:1/v1",
            "+policy_model.responses_api_models.vllm_model.port=9000",
            "+mine.resources_servers.simple_weather.entrypoint=app.py",
            "+startup_timeout=5",
        ],
    )
    assert set(overrides) == {"config_paths", "policy_base_url", "policy_model", "mine", "startup_timeout"}


TRAINER_KEYS = [
    "+port_range_low=5000",
    "+port_range_high=5999",
    "+global_aiohttp_connector_limit_per_host=16384",
    "+global_aiohttp_connector_limit=65536",
    "+uv_cache_dir=/tmp/uv",
    "+uv_venv_dir=/tmp/venvs",
    "+hf_token=hf_x",
    "+skip_venv_if_present=true",
    "+judge_api_key=sk-judge",
    "+ray_head_node_address=10.0.0.1:6379",
    "+default_host=10.0.0.2",
    "+dry_run=true",
]


@pytest.mark.parametrize("command", ["ng_run", "ng_dump_config", "ng_collect_rollouts", "ng_status"])
def test_the_global_keys_trainers_pass_and_free_variables_are_accepted(command: str) -> None:
    """NeMo Gym's global keys, and top-level names far from any known key (`${…}` variables)."""
    module, keys = COMMANDS[command]
    args = [VLLM, *TRAINER_KEYS, "+my_dataset_tag=v3"]
    overrides = check_command_line(command, keys, args)
    assert set(overrides) == {"config_paths", "my_dataset_tag"} | {a[1:].split("=")[0] for a in TRAINER_KEYS}


def test_a_near_miss_that_the_config_references_is_a_variable(tmp_path) -> None:
    """`+concurency=8` is refused, unless a config file uses `${concurency}`."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "x:\n  resources_servers:\n    echo:\n      entrypoint: app.py\n      n: ${concurency}\n"
    )
    overrides = check_command_line(
        "ng_collect_rollouts",
        collect_rollouts.CollectRolloutsKeys,
        [f"+config_paths=[{config}]", "+concurency=8"],
    )
    assert overrides["concurency"] == 8


def test_a_wrong_type_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(collect_rollouts, ["+num_repeats=0", "+input_jsonl_fpath=x", "+output_jsonl_fpath=y"]) == 2
    assert "config key 'num_repeats' (from command line): Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )


def test_closest_uses_difflib_and_refuses_to_guess_wildly() -> None:
    assert closest("concurency", ["concurrency", "limit"]) == "concurrency"
    assert closest("xyz", ["concurrency", "limit"]) is None


def test_ng_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(help, []) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in out


def test_ng_version_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(version, []) == 0
    text = capsys.readouterr().out
    assert text.startswith("nemo_gym ") and "\n  openai: " in text and "\n  CPUs: " in text
    assert invoke(version, ["+json=true"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"nemo_gym", "python", "dependencies", "system"}
    assert info["dependencies"]["openai"] != "not installed"
    assert set(info["system"]) >= {"os", "cpus", "memory_gb", "architecture"}
