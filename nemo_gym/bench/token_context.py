"""Token mode at long contexts: the adapter's CPU per spliced turn, at 1k-, 8k- and 32k-token prompts.

A rollout starts with a user message of about N tokens, then alternates a tool call, its result
and an answer, with a new question after each answer: 11 requests, the last 10 spliced. Each
request carries every earlier turn's token ids back (the caller appends the adapter's output to
its history, as agents do), so a request at turn t holds about t lists of N ids. The upstream is
the bundled simulator (it renders and tokenizes for real, so the splice's /tokenize calls are the
real ones), on its own core as far as the machine allows; its CPU is not counted.

Adapter CPU is utime+stime of its process from /proc (10 ms ticks), over a window of the same
turn of several rollouts (more rollouts at small N, where a turn costs a few ms), divided by the
requests in it. Baseline: the same process-free cost of just handling the id lists, measured here
with orjson on the very payloads: parsing the caller's request, encoding the response, encoding
the prompt sent upstream, parsing an answer carrying the prompt and generation ids with their
log-probs. The ratio is the adapter's CPU over that baseline.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from nemo_gym.config import free_port
from nemo_gym.testing.processes import start_simulator, stop_process

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
SIZES = (1_000, 8_000, 32_000)
TURNS = 10  # spliced turns per rollout, after the first
REPEATS = {1_000: 40, 8_000: 10, 32_000: 5}  # rollouts per size: enough CPU per window for 10 ms ticks
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) seconds of a process: the adapter's own work, and the kernel's on its behalf
    (on loopback that includes delivering what it sends, so it grows with the bytes moved)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _long_question(tokens: int) -> str:
    # the simulator's tokenizer: a word and a space are two tokens
    words = " ".join(f"w{i % 997}" for i in range(tokens // 2))
    return f"{words}. What is the weather in Paris?"


def _baseline_ms(request: bytes, response: dict[str, Any]) -> float:
    """orjson's time for the id lists this turn must move, best of three."""
    last = response["output"][-1]
    prompt, gen, lps = last["prompt_token_ids"], last["generation_token_ids"], last["generation_log_probs"]
    answer = orjson.dumps(
        {
            "prompt_token_ids": prompt,
            "choices": [
                {
                    "token_ids": gen,
                    "logprobs": {
                        "content": [
                            {"token": f"token_id:{t}", "logprob": p} for t, p in zip(gen, lps, strict=True)
                        ]
                    },
                }
            ],
        }
    )
    best = float("inf")
    gc.disable()  # the adapter runs with raised GC thresholds; time the parsing, not collections
    try:
        for _ in range(5):
            start = time.perf_counter()
            orjson.loads(request)
            orjson.dumps(response)
            orjson.dumps({"kv_transfer_params": {"prompt_token_ids": prompt}})
            orjson.loads(answer)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best * 1000


def _advance(history: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
    history += out
    calls = [item for item in out if item["type"] == "function_call"]
    history += [{"type": "function_call_output", "call_id": c["call_id"], "output": "cold"} for c in calls]
    if not calls:
        history.append({"role": "user", "content": "And in Oslo?"})


def measure(adapter_url: str, pid: int, size: int) -> dict[str, Any]:
    repeats = REPEATS.get(size, 3)
    histories: list[list[dict[str, Any]]] = []
    with httpx.Client(base_url=adapter_url, timeout=600) as client:
        for _ in range(repeats):  # the first, unspliced turn of every rollout, outside the windows
            history: list[dict[str, Any]] = [{"role": "user", "content": _long_question(size)}]
            r = client.post("/v1/responses", json={"input": history, "tools": TOOLS})
            r.raise_for_status()
            _advance(history, r.json()["output"])
            histories.append(history)
        per_turn: list[float] = []
        user: list[float] = []
        baseline: list[float] = []
        prompt_lens: list[int] = []
        outcomes: dict[str, int] = {}
        for _turn in range(TURNS):
            bodies = [orjson.dumps({"input": h, "tools": TOOLS}) for h in histories]
            answers = []
            user0, sys0 = cpu_split(pid)
            for body in bodies:
                r = client.post("/v1/responses", content=body, headers={"content-type": "application/json"})
                r.raise_for_status()
                answers.append(r.json())
            user1, sys1 = cpu_split(pid)
            per_turn.append((user1 + sys1 - user0 - sys0) * 1000 / repeats)
            user.append((user1 - user0) * 1000 / repeats)
            baseline.append(sum(_baseline_ms(b, a) for b, a in zip(bodies, answers, strict=True)) / repeats)
            for history, answer in zip(histories, answers, strict=True):
                drift = answer["output"][-1]["token_drift"]
                outcomes[drift["outcome"]] = outcomes.get(drift["outcome"], 0) + 1
                _advance(history, answer["output"])
            prompt_lens.append(len(answers[0]["output"][-1]["prompt_token_ids"]))
    mean = sum(per_turn) / len(per_turn)
    mean_user = sum(user) / len(user)
    mean_base = sum(baseline) / len(baseline)
    return {
        "scenario": f"token mode, {size // 1000}k-token prompt, {TURNS} spliced turns",
        "prompt_tokens": [prompt_lens[0], prompt_lens[-1]],
        "rollouts": repeats,
        "outcomes": outcomes,
        "adapter_cpu_ms_per_turn": round(mean, 2),
        "adapter_cpu_ms_first_last": [round(per_turn[0], 2), round(per_turn[-1], 2)],
        "adapter_user_cpu_ms_per_turn": round(mean_user, 2),
        "baseline_ms_per_turn": round(mean_base, 2),
        "baseline_ms_first_last": [round(baseline[0], 2), round(baseline[-1], 2)],
        "ratio": round(mean / mean_base, 2) if mean_base else None,
        "user_ratio": round(mean_user / mean_base, 2) if mean_base else None,
    }


def bench(start_adapter: Any, sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    """One row per size; `start_adapter(name, upstream, overrides)` is the bench's."""
    sim_port = free_port()
    sim = start_simulator(sim_port, "--model", "bench-model", "--max-model-len", str(max(sizes) * 2))
    adapter = start_adapter(
        "bench_token_context",
        f"http://127.0.0.1:{sim_port}/v1",
        {"return_token_id_information": True, "prefix_token_ids": "required"},
    )
    rows = []
    try:
        for size in sizes:
            rows.append(measure(adapter.url, adapter.proc.pid, size))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
    finally:
        stop_process(adapter.proc)
        stop_process(sim)
    return rows


def markdown_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Token mode at long contexts",
        "",
        "`nemo_gym/bench/token_context.py`: rollouts that start with an N-token user message, then "
        f"{TURNS} spliced turns (tool call, result, answer, new question), each request carrying every "
        "earlier turn's ids back, against the simulator. Adapter CPU per turn (from /proc, over windows "
        "of the same turn of several rollouts) vs the baseline of just parsing and encoding this turn's "
        "id lists with orjson (the caller's request, the response, the prompt sent upstream, an answer "
        "with prompt and generation ids); first and last turn shown to see the growth with turns.",
        "",
        "| scenario | prompt tokens (turn 2 → 11) | rollouts | adapter CPU ms/turn | first → last turn "
        "| of which user | baseline ms/turn | first → last turn | ratio | user ratio |",
        "|---|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        first, last = r["adapter_cpu_ms_first_last"]
        bfirst, blast = r["baseline_ms_first_last"]
        lines.append(
            f"| {r['scenario']} | {r['prompt_tokens'][0]:,} → {r['prompt_tokens'][1]:,} | {r['rollouts']} | "
            f"{r['adapter_cpu_ms_per_turn']:.2f} | {first:.2f} → {last:.2f} | {r['adapter_user_cpu_ms_per_turn']:.2f} | "
            f"{r['baseline_ms_per_turn']:.2f} | {bfirst:.2f} → {blast:.2f} | {r['ratio']} | {r['user_ratio']} |"
        )
    return lines
