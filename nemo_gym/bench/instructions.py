"""`python -m nemo_gym.bench.instructions` (`make bench-instructions`): the adapter's own
instructions per request, counted by valgrind's callgrind, for `make bench`'s adapter scenarios.

Why a second measure: CPU time per request differs by several percent between two processes
that run the same code (each process has its own hash seed and memory layout), which is as much
as most changes move it. Comparing two checkouts with `make bench` rows therefore takes many
alternating runs; an instruction count comes out the same on every run, so one run per side
tells whether a change made the adapter's own work larger or smaller. It counts user-space
instructions only: system calls, cache misses and waiting are what `make bench` measures.

Each scenario starts the canned upstream of `make bench` and one adapter under callgrind with
instrumentation off, warms it up, then counts exactly `--requests` sequential requests (one
keep-alive connection that sends its session cookie back). `--checkout DIR` runs another
checkout's adapter (a `git worktree` of the base of a change, for instance) with this harness,
so both sides answer the same requests; giving it twice prints them side by side.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nemo_gym.bench.adapter_process import adapter_launch
from nemo_gym.bench.scenarios import ADAPTER_SCENARIOS
from nemo_gym.config import PROJECT_ROOT, free_port
from nemo_gym.testing.processes import stop_process, wait_healthy

DEFAULT_SCENARIOS = (
    "responses,chat,token_tokenize,token_inline,token_spliced,token_unspliced,responses_aiohttp"
)
# Python under callgrind starts tens of times slower than natively.
STARTUP_TIMEOUT_S = 600.0


class ValgrindMissing(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Count:
    """What one scenario cost in one checkout."""

    scenario: str
    checkout: str
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def callgrind_totals(dump: str) -> int:
    """The `totals:` line of a callgrind dump: every instruction counted while it was on."""
    for line in dump.splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError("not a callgrind dump: no totals line")


class SequentialCaller:
    """One keep-alive connection that sends back the session cookie it was given."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.path = path
        self.body = body
        self.cookie: str | None = None

    def call(self) -> None:
        headers = {"content-type": "application/json"}
        if self.cookie:
            headers["cookie"] = self.cookie
        self.connection.request("POST", self.path, self.body, headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {self.path} answered {response.status}: {answer[:300]!r}")
        set_cookie = response.getheader("set-cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]

    def close(self) -> None:
        self.connection.close()


def count(checkout: Path, scenario: str, upstream: str, requests: int, warmup: int, workdir: Path) -> Count:
    """Start `checkout`'s adapter under callgrind for `scenario`, and count `requests` requests."""
    _key, overrides, path, body = ADAPTER_SCENARIOS[scenario]
    launch = adapter_launch(f"instructions_{scenario}", upstream, overrides, checkout=checkout)
    dump = workdir / f"{scenario}.callgrind"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={dump}",
        *launch.command,
    ]
    proc = subprocess.Popen(
        command, env=launch.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=launch.cwd
    )
    caller = SequentialCaller(launch.port, path, body)
    try:
        wait_healthy(f"{launch.url}/health", timeout=STARTUP_TIMEOUT_S, proc=proc)
        for _ in range(warmup):
            caller.call()
        subprocess.run(["callgrind_control", "--instr=on", str(proc.pid)], check=True, capture_output=True)
        for _ in range(requests):
            caller.call()
        subprocess.run(["callgrind_control", "--instr=off", str(proc.pid)], check=True, capture_output=True)
    finally:
        caller.close()
        stop_process(proc, timeout=120)
    return Count(scenario, str(checkout), requests, callgrind_totals(dump.read_text()))


def table(counts: list[Count], checkouts: list[Path]) -> str:
    """Markdown: a row per scenario, a column per checkout, and the change when there are two."""
    by = {(c.scenario, c.checkout): c for c in counts}
    scenarios = list(dict.fromkeys(c.scenario for c in counts))
    header = ["scenario", *(f"`{path}` instructions/request" for path in checkouts)]
    if len(checkouts) == 2:
        header.append("change")
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for scenario in scenarios:
        values = [by[(scenario, str(path))].per_request for path in checkouts]
        cells = [scenario, *(f"{value:,.0f}" for value in values)]
        if len(values) == 2:
            cells.append(f"{(values[1] - values[0]) / values[0]:+.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="count the adapter's instructions per request under callgrind"
    )
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help="adapter scenarios of `make bench`")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per scenario")
    parser.add_argument("--warmup", type=int, default=300, help="requests before counting starts")
    parser.add_argument(
        "--checkout",
        action="append",
        type=Path,
        help="a checkout whose adapter to count (default: this one); twice to compare two",
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios.split(",") if s not in ADAPTER_SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(ADAPTER_SCENARIOS)}")
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)", file=sys.stderr)
        return 2
    checkouts = [path.resolve() for path in (args.checkout or [PROJECT_ROOT])]
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "nemo_gym.bench.fast_upstream", "--port", str(up_port)], cwd=PROJECT_ROOT
    )
    counts: list[Count] = []
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}/health", proc=upstream)
        with tempfile.TemporaryDirectory(prefix="nemo_gym_callgrind_") as workdir:
            for scenario in args.scenarios.split(","):
                for checkout in checkouts:
                    result = count(
                        checkout,
                        scenario,
                        f"http://127.0.0.1:{up_port}/v1",
                        args.requests,
                        args.warmup,
                        Path(workdir),
                    )
                    counts.append(result)
                    print(
                        f"{scenario} {checkout}: {result.per_request:,.0f} instructions/request", flush=True
                    )
    finally:
        stop_process(upstream)
    print(table(counts, checkouts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
