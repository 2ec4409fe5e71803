"""`gym` (also installed as `ng`): NeMo Gym 0.7.0's command, `gym <group> <action> [flags] [+key=value ...]`.

Every action runs one of our `ng_*` commands (`gym env start` is `ng_run`), its flags translated to
that command's `+key=value` keys (`gym_options.py`), so the two spellings cannot drift apart. A
mistyped group, action, flag or choice is refused with the closest real one; `--help` works at
every level; raw `+key=value` overrides pass through unchanged after the translated flags.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from nemo_gym.cli.gym_commands import COMMANDS, GROUPS, Leaf
from nemo_gym.cli.gym_options import CONFIG, JSON, merge_config_paths
from nemo_gym.cli.keys import closest
from nemo_gym.config import ConfigError

PROG = "gym"
_INVALID_CHOICE = re.compile(r"invalid choice: '?([^',)\s]+)'?")


class GymArgumentParser(argparse.ArgumentParser):
    """argparse with a did-you-mean for a mistyped subcommand or choice."""

    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match:
            typo = match.group(1)
            choices = [str(c) for action in self._actions if action.choices for c in action.choices]
            others = [c for c in choices if c != typo]
            guess = closest(typo, others) or next((c for c in others if c.startswith(typo)), None)
            if guess:
                message += f"; did you mean `{guess}`?"
        super().error(message)


def _epilog(leaf: Leaf) -> str:
    if leaf.refusal:
        return ""
    command = leaf.ng_command
    return (
        f"Runs {command}. Any of its keys can follow as +key=value (`{command} --help` lists them); "
        "they come after the flags' own, so they win."
    )


def _add_leaf(subparsers: Any, name: str, leaf: Leaf, prog_prefix: str) -> None:
    parser = subparsers.add_parser(
        name,
        help=leaf.summary,
        description=leaf.summary,
        epilog=_epilog(leaf),
        prog=f"{prog_prefix} {name}",
    )
    parser.set_defaults(_leaf=leaf, _parser=parser)
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="Debug logging.")
    parser.add_argument(
        "--search-dir",
        action="append",
        metavar="DIR",
        help="Extra root to look for components and configs in (NEMO_GYM_EXTRA_ROOTS); repeatable.",
    )
    for option in leaf.options:
        option.add_to(parser)


def build_parser() -> GymArgumentParser:
    parser = GymArgumentParser(
        prog=PROG,
        description="NeMo Gym's `gym` command. Each action runs one of the ng_* commands.",
        epilog="`gym <group> --help` lists a group's actions; `gym <group> <action> --help` its flags.",
    )
    parser.add_argument("--version", action="store_true", help="Print versions and exit (ng_version).")
    parser.add_argument("--json", dest="top_json", action="store_true", help="JSON output (with --version).")
    parser.add_argument("-v", "--verbose", dest="top_verbose", action="store_true", help="Debug logging.")
    parser.set_defaults(_parser=parser, _leaf=None)
    top = parser.add_subparsers(metavar="GROUP", dest="group")
    groups: dict[str, Any] = {}
    for name, leaf in COMMANDS.items():
        group, action = name.split()
        if group not in groups:
            group_parser = top.add_parser(
                group, help=GROUPS[group], description=GROUPS[group], prog=f"{PROG} {group}"
            )
            group_parser.set_defaults(_parser=group_parser, _leaf=None)
            groups[group] = group_parser.add_subparsers(metavar="ACTION", dest="action")
        _add_leaf(groups[group], action, leaf, f"{PROG} {group}")
    return parser


@contextlib.contextmanager
def _extra_roots(dirs: list[str] | None) -> Iterator[None]:
    """`--search-dir` for the command's duration (and the servers it starts, which inherit it)."""
    from nemo_gym.paths import NEMO_GYM_EXTRA_ROOTS_ENV_VAR_NAME as VAR

    if not dirs:
        yield
        return
    before = os.environ.get(VAR)
    os.environ[VAR] = os.pathsep.join([*(os.path.abspath(d) for d in dirs), *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VAR, None)
        else:
            os.environ[VAR] = before


def _refuse_unknown(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """A leftover `--flag` is a typo (overrides never start with '-'); a leftover bare word is not an override."""
    flags = [token for token in extra if token.startswith("-")]
    if flags:
        known = [opt for action in parser._actions for opt in action.option_strings]
        hints = []
        for token in flags:
            guess = closest(token.split("=", 1)[0], known)
            if guess:
                hints.append(f"did you mean `{guess}` for `{token}`?")
        parser.error(f"unrecognized arguments: {' '.join(flags)}" + (f"; {' '.join(hints)}" if hints else ""))
    words = [token for token in extra if "=" not in token]
    if words:
        parser.error(f"unrecognized arguments: {' '.join(words)} (overrides are written +key=value)")


def translate(leaf: Leaf, args: argparse.Namespace, raw: list[str]) -> list[str]:
    """The `+key=value` arguments the leaf's module gets: config paths first, fixed keys, flags, raw."""
    paths: list[str] = []
    overrides: list[str] = list(leaf.fixed)
    for option in leaf.options:
        option_paths, option_overrides = option.translate(args)
        paths += option_paths
        overrides += option_overrides
    if (args.verbose or args.top_verbose) and CONFIG in leaf.options:
        overrides.append("+verbose=true")
    return merge_config_paths(paths, [*overrides, *raw])


def run_module(module_name: str, args: list[str]) -> int:
    """Run `nemo_gym.cli.<ng_command>` on `args` exactly as its own console script would."""
    from nemo_gym.cli.common import run_cli

    module = importlib.import_module(module_name)
    try:
        run_cli(module.main, args, command=module.COMMAND, summary=module.SUMMARY, keys=module.KEYS)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    active: argparse.ArgumentParser = args._parser
    leaf: Leaf | None = args._leaf
    if leaf is not None and leaf.refusal:
        print(f"error: {leaf.refusal}", file=sys.stderr)
        return 2
    _refuse_unknown(active, extra)
    if args.top_verbose or getattr(args, "verbose", None):
        logging.basicConfig(level=logging.DEBUG)
    if args.version:
        return run_module("nemo_gym.cli.ng_version", ["+json=true"] if args.top_json else [])
    if leaf is None:
        active.print_help(sys.stderr)
        return 2
    if args.top_json:
        if JSON not in leaf.options:
            active.error("--json applies to --version and to the listing and status commands")
        args.json = True
    if leaf.check:
        # Checked before any named config is looked up, so the flags' own conflict is what is reported.
        plain = [
            t for o in leaf.options if o.kind not in ("config", "selector") for t in o.translate(args)[1]
        ]
        problem = leaf.check(args, [*plain, *extra])
        if problem:
            active.error(problem)
    with _extra_roots(args.search_dir):
        try:
            overrides = translate(leaf, args, extra)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        module = leaf.choose(args) if leaf.choose else leaf.module
        assert module is not None
        return run_module(module, overrides)


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
