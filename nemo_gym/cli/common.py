"""Shared CLI plumbing: `--help` from the command's keys; config errors as one clear line, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import BaseModel

from nemo_gym.config import ConfigError


def command_entry(
    main: Callable[[list[str]], int], *, command: str, summary: str, keys: type[BaseModel]
) -> Callable[[], None]:
    """A command's console-script function: `run_cli` of its `main` on this process's command line."""

    def entry() -> None:
        run_cli(main, command=command, summary=summary, keys=keys)

    entry.__name__ = entry.__qualname__ = command
    entry.__doc__ = f"`{command}` on this process's command line."
    return entry


def run_cli(
    main: Callable[[list[str]], int],
    argv: list[str] | None = None,
    *,
    command: str | None = None,
    summary: str = "",
    keys: type[BaseModel] | None = None,
) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if command and keys is not None:
        from nemo_gym.cli.keys import render_help, wants_help

        if wants_help(args):
            print(render_help(command, summary, keys))
            raise SystemExit(0)
    try:
        code = main(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join("{:<" + str(w) + "}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out += [line.format(*(str(c) for c in row)) for row in rows]
    return "\n".join(out)
