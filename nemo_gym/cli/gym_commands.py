"""What each `gym <group> <action>` runs: one of our `ng_*` command modules, with the overrides its
flags translate to. A command with no implementation here (Slurm submission, dataset transfer to
or from a hub) answers with why and what to do instead, and exits non-zero.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from nemo_gym.cli.gym_options import (
    COMPONENT_NAME,
    CONFIG,
    CONFIG_SOURCES,
    JSON,
    MODEL_FLAGS,
    Option,
)


@dataclass(frozen=True)
class Leaf:
    """One `gym` command: the `nemo_gym.cli` module whose `main(args)` it runs, and its flags."""

    summary: str
    module: str | None = None
    options: tuple[Option, ...] = ()
    # Overrides every invocation passes (e.g. which component type `ng_list` lists).
    fixed: tuple[str, ...] = ()
    # Picks the module from the parsed flags when one command has two implementations.
    choose: Callable[[argparse.Namespace], str] | None = None
    # Checks the flags' combination; returns an error message or None.
    check: Callable[[argparse.Namespace, list[str]], str | None] | None = None
    # For commands we do not run: the message, printed with a non-zero exit.
    refusal: str | None = None

    @property
    def ng_command(self) -> str | None:
        return self.module.rsplit(".", 1)[-1] if self.module else None


def _has_key(overrides: list[str], key: str) -> bool:
    return any(token.lstrip("+").split("=", 1)[0] == key for token in overrides)


# --------------------------------------------------------------------------- env test / init


def _entrypoint_of(name: str) -> str:
    return f"resources_servers/{name}"


RESOURCES_SERVER_ENTRYPOINT = Option(
    "--resources-server",
    "entrypoint",
    "The resources server (resources_servers/NAME); maps to +entrypoint=resources_servers/NAME.",
    metavar="NAME",
    transform=_entrypoint_of,
)
TEST_ALL = Option("--all", None, "Test every server implementation (ng_test_all).", "switch")


def _env_test_check(args: argparse.Namespace, overrides: list[str]) -> str | None:
    named = _has_key(overrides, "entrypoint")
    if args.all and named:
        return "--all tests every server implementation, so it cannot be combined with --resources-server"
    if not args.all and not named:
        return "needs a target: --resources-server NAME, +entrypoint=<server type>/<name>, or --all"
    return None


def _env_init_check(_args: argparse.Namespace, overrides: list[str]) -> str | None:
    if not _has_key(overrides, "entrypoint"):
        return "needs --resources-server NAME (the folder resources_servers/NAME it creates)"
    return None


# --------------------------------------------------------------------------- eval run

NO_SERVE = Option(
    "--no-serve", None, "Collect against servers already running (ng_collect_rollouts).", "switch"
)


def _eval_run_module(args: argparse.Namespace) -> str:
    return "nemo_gym.cli.ng_collect_rollouts" if args.no_serve else "nemo_gym.cli.ng_e2e_collect_rollouts"


def _eval_run_check(args: argparse.Namespace, _overrides: list[str]) -> str | None:
    if args.no_serve and args.agent_type:
        return (
            "--agent-type chooses which agent the started servers run, so it cannot be combined with "
            "--no-serve; name a running agent with --agent"
        )
    return None


EVAL_RUN_OPTIONS = (
    *CONFIG_SOURCES,
    NO_SERVE,
    Option("--agent", "agent_name", "Agent instance to send every row to.", short="-a"),
    Option("--input", "input_jsonl_fpath", "Input tasks JSONL.", short="-i", metavar="PATH"),
    Option("--output", "output_jsonl_fpath", "Output rollouts JSONL.", short="-o", metavar="PATH"),
    Option("--limit", "limit", "Use only the first N input rows.", "int", metavar="N"),
    Option("--num-repeats", "num_repeats", "Rollouts per input row.", "int", metavar="N"),
    Option("--interleave-repeats", "interleave_repeats", "Start repeats round by round.", "switch"),
    Option(
        "--concurrency", "num_samples_in_parallel", "Most rollouts in flight at once.", "int", metavar="N"
    ),
    Option("--resume", "resume_from_cache", "Skip rollouts already in the output.", "switch"),
    *MODEL_FLAGS,
    Option("--temperature", "responses_create_params.temperature", "Sampling temperature.", "float"),
    Option("--top-p", "responses_create_params.top_p", "Nucleus sampling top-p.", "float"),
    Option(
        "--max-output-tokens",
        "responses_create_params.max_output_tokens",
        "Most output tokens per call.",
        "int",
    ),
    Option("--disable-aggregation", "disable_aggregation", "Write no aggregate-metrics file.", "switch"),
)

# --------------------------------------------------------------------------- refusals

SLURM = (
    "`gym eval submit` submits Slurm jobs; this product drives no cluster scheduler. Run the evaluation "
    "where it should run with `gym eval run` (or `ng_e2e_collect_rollouts`), e.g. inside your own job script."
)


def _network_refusal(what: str) -> str:
    return (
        f"`gym dataset {what}` transfers datasets to or from Hugging Face / GitLab, which this product does "
        "not do (it needs the network and the hub's credentials). Use the hub's own client (e.g. "
        "`huggingface-cli download <repo> --repo-type dataset`), then `gym dataset collate` or "
        "`gym eval run --input <file>.jsonl`."
    )


# --------------------------------------------------------------------------- the table

GROUPS = {
    "list": "List components (environments, benchmarks, agents, models, resources servers).",
    "env": "Start, inspect, validate, test and create environments.",
    "eval": "Collect rollouts and compute metrics over them.",
    "dataset": "Check, collate and render datasets.",
    "dev": "Contributor helpers.",
}

LIST_OPTIONS = (COMPONENT_NAME, JSON)


def _lister(kind: str, noun: str) -> Leaf:
    return Leaf(
        f"List {noun}, or show one by name.",
        "nemo_gym.cli.ng_list",
        LIST_OPTIONS,
        fixed=(f"+component_type={kind}",),
    )


COMMANDS: dict[str, Leaf] = {
    "list environments": _lister("environments", "environments (environments/ bundles and runnable configs)"),
    "list benchmarks": _lister("benchmarks", "benchmarks (benchmarks/*/config.yaml)"),
    "list agents": _lister("agents", "agent implementations (responses_api_agents/)"),
    "list models": _lister("models", "model server implementations (responses_api_models/)"),
    "list resources-servers": _lister("resources_servers", "resources servers (resources_servers/)"),
    "env start": Leaf(
        "Start the head server and every configured server (ng_run).",
        "nemo_gym.cli.ng_run",
        (*CONFIG_SOURCES, *MODEL_FLAGS),
    ),
    "env resolve": Leaf(
        "Print the merged, resolved config with secrets redacted (ng_dump_config).",
        "nemo_gym.cli.ng_dump_config",
        (*CONFIG_SOURCES, *MODEL_FLAGS),
    ),
    "env status": Leaf(
        "Show the running servers and their health (ng_status).", "nemo_gym.cli.ng_status", (JSON,)
    ),
    "env test": Leaf(
        "Run one server implementation's tests (ng_test), or every one's with --all (ng_test_all).",
        "nemo_gym.cli.ng_test",
        (RESOURCES_SERVER_ENTRYPOINT, TEST_ALL),
        choose=lambda args: "nemo_gym.cli.ng_test_all" if args.all else "nemo_gym.cli.ng_test",
        check=_env_test_check,
    ),
    "env validate": Leaf(
        "Validate a config or an environment bundle's manifest without starting anything (ng_validate).",
        "nemo_gym.cli.ng_validate",
        (
            Option("name", "environment", "An environment bundle to validate by name.", positional=True),
            Option("--manifest", "manifest_path", "A manifest.yaml to validate.", metavar="PATH"),
            Option("--strict", "strict", "Fail when the config leaves required values unset.", "switch"),
            JSON,
            *CONFIG_SOURCES,
            *MODEL_FLAGS,
        ),
    ),
    "env init": Leaf(
        "Create a new resources server that runs as is (ng_init_resources_server).",
        "nemo_gym.cli.ng_init_resources_server",
        (RESOURCES_SERVER_ENTRYPOINT,),
        check=_env_init_check,
    ),
    "eval run": Leaf(
        "Start the servers, collect rollouts, stop them (ng_e2e_collect_rollouts); with --no-serve, "
        "collect against running servers (ng_collect_rollouts).",
        "nemo_gym.cli.ng_e2e_collect_rollouts",
        EVAL_RUN_OPTIONS,
        choose=_eval_run_module,
        check=_eval_run_check,
    ),
    "eval aggregate": Leaf(
        "Merge rollout shards and compute their aggregate metrics (ng_aggregate_rollouts).",
        "nemo_gym.cli.ng_aggregate_rollouts",
        (
            CONFIG,
            Option(
                "--input-glob",
                "input_glob",
                "Glob (or comma-separated globs) of the rollout shards.",
                short="-i",
                metavar="GLOB",
            ),
            Option("--output", "output_jsonl_fpath", "Merged rollouts JSONL.", short="-o", metavar="PATH"),
            Option(
                "--no-merge",
                "merge_shards",
                "Write only the metrics, not the merged rollouts.",
                "switch",
                switch_value=False,
            ),
        ),
    ),
    "eval profile": Leaf(
        "Reward profile of rollouts: per task, per agent, per repeat (ng_reward_profile).",
        "nemo_gym.cli.ng_reward_profile",
        (
            Option(
                "--inputs", "materialized_inputs_jsonl_fpath", "The rows the rollouts ran.", metavar="PATH"
            ),
            Option("--rollouts", "rollouts_jsonl_fpath", "Rollouts JSONL.", metavar="PATH"),
            Option(
                "--allow-partial", "allow_partial_rollouts", "Profile rows with missing rollouts.", "switch"
            ),
        ),
    ),
    "eval reverify": Leaf(
        "Re-run /verify over saved rollouts against running servers (ng_reverify_rollouts).",
        "nemo_gym.cli.ng_reverify_rollouts",
        (
            Option("--rollouts", "rollouts_jsonl_fpath", "Rollouts JSONL to verify again.", metavar="PATH"),
            Option(
                "--inputs", "materialized_inputs_jsonl_fpath", "The rows the rollouts ran.", metavar="PATH"
            ),
            Option(
                "--output",
                "output_jsonl_fpath",
                "Output JSONL with the new rewards.",
                short="-o",
                metavar="PATH",
            ),
            Option(
                "--concurrency", "num_samples_in_parallel", "Most /verify calls at once.", "int", metavar="N"
            ),
            Option("--limit", "limit", "Verify only the first N rollouts.", "int", metavar="N"),
            Option("--overwrite", "overwrite", "Replace an existing output file.", "switch"),
            Option(
                "--disable-aggregation", "disable_aggregation", "Write no aggregate-metrics file.", "switch"
            ),
        ),
    ),
    "eval submit": Leaf("Submit a Slurm job (not available here).", refusal=SLURM),
    "dataset collate": Leaf(
        "Validate the configured datasets and collate them per type, with metrics (ng_prepare_data).",
        "nemo_gym.cli.ng_prepare_data",
        (
            *CONFIG_SOURCES,
            Option("--mode", "mode", "What to collate.", choices=("train_preparation", "example_validation")),
            Option("--output-dir", "output_dirpath", "Where the collated files go.", metavar="DIR"),
            Option(
                "--download", "should_download", "Download missing datasets (needs the network).", "switch"
            ),
        ),
    ),
    "dataset render": Leaf(
        "Apply a prompt config to raw rows (ng_materialize_prompts).",
        "nemo_gym.cli.ng_materialize_prompts",
        (
            Option("--input", "input_jsonl_fpath", "Raw input JSONL.", short="-i", metavar="PATH"),
            Option("--prompt-config", "prompt_config", "Prompt config YAML.", metavar="PATH"),
            Option("--output", "output_jsonl_fpath", "Output JSONL.", short="-o", metavar="PATH"),
        ),
    ),
    "dataset upload": Leaf(
        "Upload a dataset to a hub (not available here).", refusal=_network_refusal("upload")
    ),
    "dataset download": Leaf(
        "Download a dataset from a hub (not available here).", refusal=_network_refusal("download")
    ),
    "dataset rm": Leaf("Delete a dataset from GitLab (not available here).", refusal=_network_refusal("rm")),
    "dataset migrate": Leaf(
        "Move a dataset from GitLab to Hugging Face (not available here).",
        refusal=_network_refusal("migrate"),
    ),
    "dev test": Leaf("Run nemo_gym's own test suite (ng_dev_test).", "nemo_gym.cli.ng_dev_test"),
}
