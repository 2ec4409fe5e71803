"""`gym` / `ng`: every subcommand's help, did-you-mean for typos, and the exact `ng_*` call its
flags translate to (the `ng_*` command itself is replaced by a recorder here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.cli import gym_commands, main
from nemo_gym.cli.gym_options import asset_config_path, merge_config_paths, override_text
from nemo_gym.config import ConfigError

LEAVES = sorted(gym_commands.COMMANDS)
RUNNABLE = [name for name in LEAVES if not gym_commands.COMMANDS[name].refusal]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    recorded: list[tuple[str, list[str]]] = []

    def record(module: str, args: list[str]) -> int:
        recorded.append((module, args))
        return 0

    monkeypatch.setattr(main, "run_module", record)
    return recorded


def gym(argv: list[str]) -> int:
    """`gym` as its console script runs it: argparse errors exit 2 via SystemExit."""
    try:
        return main.main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("name", LEAVES)
def test_every_command_has_help_with_its_flags(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = gym_commands.COMMANDS[name]
    assert gym([*name.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gym {name} [-h]")
    assert leaf.summary.split(" (")[0] in " ".join(out.split())
    for option in leaf.options:
        assert (option.dest if option.positional else option.flag) in out
    if leaf.module:
        assert f"Runs {leaf.ng_command}." in out


@pytest.mark.parametrize("group", sorted(gym_commands.GROUPS))
def test_group_help_lists_its_actions(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert gym([group, "--help"]) == 0
    out = capsys.readouterr().out
    for name in LEAVES:
        if name.startswith(f"{group} "):
            assert name.split()[1] in out


def test_top_level_help_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert gym(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(group in out for group in gym_commands.GROUPS)
    assert gym([]) == 2
    assert "usage: gym" in capsys.readouterr().err
    assert gym(["env"]) == 2
    assert "usage: gym env" in capsys.readouterr().err


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evl", "run"], "invalid choice: 'evl'"),
        (["env", "strat"], "did you mean `start`?"),
        (["evl", "run"], "did you mean `eval`?"),
        (["list", "agnets"], "did you mean `agents`?"),
        (["eval", "reverfy"], "did you mean `reverify`?"),
        (["dataset", "colate"], "did you mean `collate`?"),
        (["eval", "run", "--outptu", "x.jsonl"], "unrecognized arguments: --outptu; did you mean `--output`"),
        (["env", "start", "--confg", "a.yaml"], "did you mean `--config` for `--confg`?"),
        (["dataset", "collate", "--mode", "train"], "did you mean `train_preparation`?"),
        (["env", "start", "stray"], "unrecognized arguments: stray (overrides are written +key=value)"),
    ],
)
def test_typos_are_refused_with_the_closest_name(
    argv: list[str], message: str, calls: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gym(argv) == 2
    assert message in capsys.readouterr().err
    assert calls == []


# --------------------------------------------------------------------------- translation

TRANSLATIONS = [
    (
        [
            "env",
            "start",
            "--config",
            "a.yaml",
            "--config",
            "b c.yaml",
            "--model",
            "Qwen/Qwen3-4B",
            "--model-url",
            "http://127.0.0.1:8000/v1",
            "--model-api-key",
            "EMPTY",
            "+head_server.port=5",
        ],
        "nemo_gym.cli.ng_run",
        [
            '+config_paths=[a.yaml,"b c.yaml"]',
            "+policy_model_name=Qwen/Qwen3-4B",
            "+policy_base_url=http://127.0.0.1:8000/v1",
            "+policy_api_key=EMPTY",
            "+head_server.port=5",
        ],
    ),
    (
        ["env", "start", "--config", "a.yaml", "+config_paths=[b.yaml]", "-v"],
        "nemo_gym.cli.ng_run",
        ["+config_paths=[a.yaml,b.yaml]", "+verbose=true"],
    ),
    (["env", "resolve", "--config", "a.yaml"], "nemo_gym.cli.ng_dump_config", ["+config_paths=[a.yaml]"]),
    (["env", "status", "--json"], "nemo_gym.cli.ng_status", ["+json=true"]),
    (["--json", "env", "status"], "nemo_gym.cli.ng_status", ["+json=true"]),
    (
        ["env", "test", "--resources-server", "simple_weather"],
        "nemo_gym.cli.ng_test",
        ["+entrypoint=resources_servers/simple_weather"],
    ),
    (
        ["env", "test", "+entrypoint=responses_api_models/vllm_model"],
        "nemo_gym.cli.ng_test",
        ["+entrypoint=responses_api_models/vllm_model"],
    ),
    (["env", "test", "--all", "+num_shards=2"], "nemo_gym.cli.ng_test_all", ["+num_shards=2"]),
    (
        ["env", "init", "--resources-server", "my_env"],
        "nemo_gym.cli.ng_init_resources_server",
        ["+entrypoint=resources_servers/my_env"],
    ),
    (
        ["env", "validate", "weather", "--strict", "--json"],
        "nemo_gym.cli.ng_validate",
        ["+environment=weather", "+strict=true", "+json=true"],
    ),
    (
        ["env", "validate", "--manifest", "environments/x/manifest.yaml"],
        "nemo_gym.cli.ng_validate",
        ["+manifest_path=environments/x/manifest.yaml"],
    ),
    (
        [
            "eval",
            "run",
            "--config",
            "a.yaml",
            "-a",
            "weather_agent",
            "-i",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--limit",
            "5",
            "--num-repeats",
            "4",
            "--concurrency",
            "16",
            "--resume",
            "--temperature",
            "0.7",
            "--max-output-tokens",
            "256",
            "--interleave-repeats",
        ],
        "nemo_gym.cli.ng_e2e_collect_rollouts",
        [
            "+config_paths=[a.yaml]",
            "+agent_name=weather_agent",
            "+input_jsonl_fpath=in.jsonl",
            "+output_jsonl_fpath=out.jsonl",
            "+limit=5",
            "+num_repeats=4",
            "+interleave_repeats=true",
            "+num_samples_in_parallel=16",
            "+resume_from_cache=true",
            "+responses_create_params.temperature=0.7",
            "+responses_create_params.max_output_tokens=256",
        ],
    ),
    (
        ["eval", "run", "--no-serve", "-i", "in.jsonl", "-o", "out.jsonl", "+head_server.port=7"],
        "nemo_gym.cli.ng_collect_rollouts",
        ["+input_jsonl_fpath=in.jsonl", "+output_jsonl_fpath=out.jsonl", "+head_server.port=7"],
    ),
    (
        ["eval", "aggregate", "-i", "r/shard*.jsonl", "-o", "r/all.jsonl", "--no-merge"],
        "nemo_gym.cli.ng_aggregate_rollouts",
        ['+input_glob="r/shard*.jsonl"', "+output_jsonl_fpath=r/all.jsonl", "+merge_shards=false"],
    ),
    (
        ["eval", "profile", "--rollouts", "r.jsonl", "--inputs", "in.jsonl", "--allow-partial"],
        "nemo_gym.cli.ng_reward_profile",
        [
            "+materialized_inputs_jsonl_fpath=in.jsonl",
            "+rollouts_jsonl_fpath=r.jsonl",
            "+allow_partial_rollouts=true",
        ],
    ),
    (
        ["eval", "reverify", "--rollouts", "r.jsonl", "-o", "v.jsonl", "--concurrency", "4", "--overwrite"],
        "nemo_gym.cli.ng_reverify_rollouts",
        [
            "+rollouts_jsonl_fpath=r.jsonl",
            "+output_jsonl_fpath=v.jsonl",
            "+num_samples_in_parallel=4",
            "+overwrite=true",
        ],
    ),
    (
        ["dataset", "collate", "--config", "a.yaml", "--mode", "example_validation", "--output-dir", "out"],
        "nemo_gym.cli.ng_prepare_data",
        ["+config_paths=[a.yaml]", "+mode=example_validation", "+output_dirpath=out"],
    ),
    (
        ["dataset", "render", "-i", "raw.jsonl", "--prompt-config", "p.yaml", "-o", "out.jsonl"],
        "nemo_gym.cli.ng_materialize_prompts",
        ["+input_jsonl_fpath=raw.jsonl", "+prompt_config=p.yaml", "+output_jsonl_fpath=out.jsonl"],
    ),
    (
        ["list", "agents", "simple_agent", "--json"],
        "nemo_gym.cli.ng_list",
        ["+component_type=agents", "+component_name=simple_agent", "+json=true"],
    ),
    (["list", "resources-servers"], "nemo_gym.cli.ng_list", ["+component_type=resources_servers"]),
    (["list", "environments"], "nemo_gym.cli.ng_list", ["+component_type=environments"]),
    (["list", "benchmarks"], "nemo_gym.cli.ng_list", ["+component_type=benchmarks"]),
    (["list", "models"], "nemo_gym.cli.ng_list", ["+component_type=models"]),
    (["dev", "test"], "nemo_gym.cli.ng_dev_test", []),
    (["--version", "--json"], "nemo_gym.cli.ng_version", ["+json=true"]),
]


@pytest.mark.parametrize(
    ("argv", "module", "args"), TRANSLATIONS, ids=[" ".join(t[0][:2]) for t in TRANSLATIONS]
)
def test_flags_translate_to_the_ng_command_keys(
    argv: list[str], module: str, args: list[str], calls: list[tuple[str, list[str]]]
) -> None:
    assert gym(argv) == 0
    assert calls == [(module, args)]


def test_every_runnable_command_is_covered_by_a_translation_case() -> None:
    covered = {" ".join(argv[:2]) for argv, _, _ in TRANSLATIONS}
    assert set(RUNNABLE) <= covered


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["env", "test"], "needs a target: --resources-server NAME"),
        (["env", "test", "--all", "--resources-server", "x"], "cannot be combined with --resources-server"),
        (["env", "init"], "needs --resources-server NAME"),
        (["eval", "run", "--no-serve", "--agent-type", "simple_agent"], "cannot be combined with --no-serve"),
        (["--json", "eval", "run"], "--json applies to --version and to the listing and status commands"),
    ],
)
def test_invalid_combinations_are_refused(
    argv: list[str], message: str, calls: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gym(argv) == 2
    assert message in capsys.readouterr().err
    assert calls == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["eval", "submit", "--config", "submit.yaml"], "drives no cluster scheduler"),
        (["dataset", "upload", "--name", "x"], "`gym dataset upload` transfers datasets"),
        (["dataset", "download", "--repo-id", "org/ds"], "`gym dataset download` transfers datasets"),
    ],
)
def test_commands_we_do_not_run_say_so_and_exit_nonzero(
    argv: list[str], words: str, calls: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gym(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err
    assert "Traceback" not in err
    assert calls == []


# --------------------------------------------------------------------------- named assets


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "plugins"
    (root / "environments" / "weather").mkdir(parents=True)
    (root / "environments" / "weather" / "config.yaml").write_text("{}\n")
    (root / "environments" / "weather" / "config_big.yaml").write_text("{}\n")
    (root / "resources_servers" / "maze" / "configs").mkdir(parents=True)
    (root / "resources_servers" / "maze" / "configs" / "maze.yaml").write_text("{}\n")
    (root / "resources_servers" / "maze" / "configs" / "maze_hard.yaml").write_text("{}\n")
    (root / "benchmarks" / "suite" / "v2").mkdir(parents=True)
    (root / "benchmarks" / "suite" / "v2" / "config.yaml").write_text("{}\n")
    return root


def test_selectors_find_configs_in_the_search_roots(tmp_path: Path, calls: list) -> None:
    root = make_root(tmp_path)
    argv = [
        "env",
        "start",
        "--search-dir",
        str(root),
        "--environment",
        "weather",
        "--environment",
        "weather/config_big",
        "--resources-server",
        "maze/maze_hard",
        "--benchmark",
        "suite/v2",
        "--model-type",
        "vllm_model",
    ]
    assert gym(argv) == 0
    vllm = Path(__file__).resolve().parents[1] / "responses_api_models/vllm_model/configs/vllm_model.yaml"
    paths = [
        root / "environments/weather/config.yaml",
        root / "environments/weather/config_big.yaml",
        root / "benchmarks/suite/v2/config.yaml",
        root / "resources_servers/maze/configs/maze_hard.yaml",
        vllm,
    ]
    assert calls == [("nemo_gym.cli.ng_run", [f"+config_paths=[{','.join(str(p) for p in paths)}]"])]


def test_unknown_asset_names_the_path_and_the_closest_name(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    with pytest.raises(ConfigError) as info:
        asset_config_path("resources-server", "maze/maze_hrd", roots=[root])
    assert "`--resources-server maze/maze_hrd` names resources_servers/maze/configs/maze_hrd.yaml" in str(
        info.value
    )
    assert "did you mean `maze_hard`?" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean `weather`"):
        asset_config_path("environment", "wether", roots=[root])


def test_unknown_asset_on_the_command_line_is_a_config_error(
    tmp_path: Path, calls: list, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path)
    assert gym(["env", "start", "--search-dir", str(root), "--environment", "wether"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "config error: config key '--environment' (from command line): `--environment wether`"
    )
    assert "did you mean `weather`?" in err and calls == []


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("results/a.jsonl", "results/a.jsonl"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("a b", '"a b"'),
        ("5", '"5"'),
        ("true", '"true"'),
        ("x,y", '"x,y"'),
        ('say "hi"', '"say \\"hi\\""'),
    ],
)
def test_override_text_reads_back_as_the_same_string(value: str, text: str) -> None:
    from nemo_gym.config.overrides import parse_overrides

    assert override_text(value) == text
    assert parse_overrides([f"+k={text}"]) == {"k": value}


def test_merge_config_paths_keeps_order_and_drops_repeats() -> None:
    assert merge_config_paths(["a.yaml", "b.yaml"], ["+x=1", "+config_paths=[b.yaml,c.yaml]"]) == [
        "+config_paths=[a.yaml,b.yaml,c.yaml]",
        "+x=1",
    ]
    assert merge_config_paths([], ["+x=1"]) == ["+x=1"]


def test_run_module_runs_the_ng_command_with_its_help_and_config_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main.run_module("nemo_gym.cli.ng_list", ["+help=true"]) == 0
    assert capsys.readouterr().out.startswith("ng_list: ")
    assert main.run_module("nemo_gym.cli.ng_list", ["+component_typ=agents"]) == 2
    assert "did you mean `component_type`?" in capsys.readouterr().err
