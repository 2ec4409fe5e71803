"""Opt-in, against REAL `vllm serve` (`make test-real-vllm`): exact token data for each model family
of ../shared/real_vllm/families (Qwen3, Llama 3.1, Mistral: tiny random models with their genuine
chat templates, special tokens and tool parsers), in token mode as a new user runs it
(`vllm_model_for_training.yaml`, splicing `auto`, vLLM without a reasoning parser).

Each family is one pytest parameter, its server started and stopped here with start_family.sh on
REAL_VLLM_FAMILY_PORT, one at a time. The adapter talks to it through a recording proxy, so the
tests can replay the adapter's own requests. Texts are random: tool calls are forced (tool_choice
required, one call, whitespace ids biased out), as the families README advises.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.conversion.call_ids import CallIdFormat, call_id_mapping
from nemo_gym.testing.payloads import OPENAI_CALL_ID as OPENAI_ID
from nemo_gym.testing.payloads import TRAINING_CONFIG as TRAINING
from nemo_gym.testing.processes import ng_run
from tests.real_vllm.helpers import TOOL
from tests.real_vllm.recording_proxy import RecordingProxy

pytestmark = pytest.mark.real_vllm
FAMILIES = tuple(os.environ.get("REAL_VLLM_FAMILIES", "qwen3,llama31,mistral").split(","))
REAL_VLLM_DIR = Path(
    os.environ.get("REAL_VLLM_DIR", Path(__file__).resolve().parents[3] / "shared" / "real_vllm")
)
PORT = int(os.environ.get("REAL_VLLM_FAMILY_PORT", "18310"))
ZOO = Path(os.environ.get("REAL_VLLM_HOME", Path.home() / ".cache" / "nemo_gym_real_vllm")) / "zoo-models"


MAX_MODEL_LEN = 2048


def start_script() -> Path:
    script = REAL_VLLM_DIR / "families" / "start_family.sh"
    if not script.exists():
        pytest.skip(f"no {script}; set REAL_VLLM_DIR (make test-real-vllm does)")
    return script


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> Iterator[str]:
    """The family's vLLM on PORT for this module's tests of it, stopped after."""
    name = request.param
    script = start_script()
    env = dict(os.environ, NO_REASONING="1")  # qwen3 without --reasoning-parser, as a new user serves it
    started = subprocess.run(["bash", str(script), name, str(PORT)], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"start_family.sh {name} {PORT} failed:\n{started.stdout}\n{started.stderr}")
    try:
        yield name
    finally:
        subprocess.run(["bash", str(script), "stop", str(PORT)], capture_output=True)


@pytest.fixture(scope="module")
def proxy(family: str) -> Iterator[RecordingProxy]:
    with RecordingProxy(f"http://127.0.0.1:{PORT}") as p:
        yield p


def training_adapter(family: str, base: str, *overrides: str) -> Iterator[str]:
    with ng_run(
        TRAINING,
        f"+policy_base_url={base}/v1",
        "+policy_api_key=EMPTY",
        f"+policy_model_name={family}",
        *overrides,
    ) as run:
        yield run.url_of("policy_model")


@pytest.fixture(scope="module")
def adapter(family: str, proxy: RecordingProxy) -> Iterator[str]:
    yield from training_adapter(family, proxy.url)


def bias(family: str) -> dict[str, int]:
    ws = json.loads((ZOO / family / "whitespace_token_ids.json").read_text())
    return {str(i): -100 for i in (ws if isinstance(ws, list) else ws["ids"])}


def forced(family: str, history: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "input": history,
        "tools": [TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_output_tokens": 64,
        "temperature": 0.0,
        "seed": 1,
        "logit_bias": bias(family),
        **extra,
    }


def answer_body(family: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {**forced(family, history), "tool_choice": "none", "max_output_tokens": 16}


def extends(a: dict[str, Any], b: dict[str, Any]) -> bool:
    prefix = a["prompt_token_ids"] + a["generation_token_ids"]
    return b["prompt_token_ids"][: len(prefix)] == prefix


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def tool_rollout(url: str, family: str, city: str, calls: int = 3) -> list[dict[str, Any]]:
    """`calls` forced tool calls answered with results, then a closing answer; each turn's last
    output item (it carries the token fields)."""
    history: list[dict[str, Any]] = [{"role": "user", "content": f"Weather in {city}?"}]
    lasts = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for turn in range(calls + 1):
            body = forced(family, history) if turn < calls else answer_body(family, history)
            out = post(client, body)["output"]
            lasts.append(out[-1])
            history += out
            fcalls = [item for item in out if item["type"] == "function_call"]
            assert bool(fcalls) == (turn < calls), f"turn {turn}: {out}"
            history += [
                {"type": "function_call_output", "call_id": c["call_id"], "output": '{"temp": 21}'}
                for c in fcalls
            ]
    return lasts


def token_drift(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health?upstream=true", timeout=30).json()["upstreams"][0]["token_drift"]


def test_three_tool_turns_and_an_answer_extend_exactly(family: str, adapter: str) -> None:
    before = token_drift(adapter)
    for i in range(10):
        lasts = tool_rollout(adapter, family, f"City{i}")
        for turn, (a, b) in enumerate(zip(lasts, lasts[1:], strict=False), start=2):
            drift = b["token_drift"]
            assert extends(a, b) and drift["extends_carried_tokens"], f"rollout {i} turn {turn}: {drift}"
            assert drift["outcome"] == "spliced", f"rollout {i} turn {turn}: {drift}"
    after = token_drift(adapter)
    delta = {k: after[k] - before[k] for k in ("measured", "extends", "diverged", "spliced", "fallbacks")}
    print(f"\n{family}: 10 rollouts of 3 tool turns + an answer: {delta}")
    assert delta == {"measured": 30, "extends": 30, "diverged": 0, "spliced": 30, "fallbacks": 0}


def test_history_with_openai_style_call_ids(family: str, adapter: str) -> None:
    """The caller's `call_…` ids (28 characters): HTTP 200; the engine saw ids its template takes
    (Mistral's: nine alphanumeric characters), the caller sees only its own."""
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "type": "function_call",
            "call_id": OPENAI_ID,
            "name": "get_weather",
            "arguments": '{"unit": "celsius"}',
        },
        {"type": "function_call_output", "call_id": OPENAI_ID, "output": '{"temp": 21}'},
    ]
    with httpx.Client(base_url=adapter, timeout=300) as client:
        out = post(client, forced(family, history))["output"]
        chat = client.post(
            "/v1/chat/completions",
            json={
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": OPENAI_ID,
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"unit": "celsius"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": OPENAI_ID, "content": '{"temp": 21}'},
                ],
                "max_tokens": 8,
                "logit_bias": bias(family),
            },
        )
    assert chat.status_code == 200, chat.text
    mapped = call_id_mapping([OPENAI_ID], CallIdFormat.ALNUM9)[OPENAI_ID]
    calls = [item for item in out if item["type"] == "function_call"]
    assert calls and all(c["call_id"] != mapped for c in calls)
    prompt = httpx.post(
        f"http://127.0.0.1:{PORT}/detokenize", json={"model": family, "tokens": out[-1]["prompt_token_ids"]}
    ).json()["prompt"]
    if family == "mistral":  # its template renders the ids: the mapped one, never the caller's
        assert f'"call_id": "{mapped}"' in prompt and OPENAI_ID not in prompt
    print(
        f"\n{family}: history with OpenAI-style call ids: HTTP 200, answer call ids {[c['call_id'] for c in calls]}"
    )


def replay_prompt_ids(body: dict[str, Any]) -> list[int]:
    """vLLM's prompt ids for the adapter's own recorded chat request, asked directly."""
    r = httpx.post(
        f"http://127.0.0.1:{PORT}/v1/chat/completions",
        json={**body, "stream": False, "return_token_ids": True, "max_tokens": 1},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()["prompt_token_ids"]


@pytest.mark.parametrize("source", ["inline", "tokenize"])
def test_reported_prompt_ids_are_what_vllm_renders_for_the_adapters_request(family: str, source: str) -> None:
    """A tool turn whose history has a reasoning item: the adapter's reported prompt ids, from
    vLLM's answer (`inline`) or from its /tokenize (`tokenize`: the proxy hides the answer's ids,
    as an older vLLM), equal what vLLM renders when the recorded request is replayed with
    return_token_ids; and with the first turn's ids carried, the spliced ids vLLM used."""
    with RecordingProxy(f"http://127.0.0.1:{PORT}", strip_prompt_ids=source == "tokenize") as own:
        for url in training_adapter(family, own.url):
            with httpx.Client(base_url=url, timeout=300) as client:
                first = post(client, forced(family, [{"role": "user", "content": "Weather in Rome?"}]))[
                    "output"
                ]
                call = next(item for item in first if item["type"] == "function_call")
                reasoning = {
                    "type": "reasoning",
                    "summary": [
                        {"type": "summary_text", "text": "The user wants the weather; I call the tool."}
                    ],
                }
                plain_call = {k: v for k, v in call.items() if not k.startswith(("prompt_", "generation_"))}
                output = {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": '{"temp": 21}',
                }
                user = {"role": "user", "content": "Weather in Rome?"}
                # rendered by the template (nothing carried), then spliced (the first turn's ids carried)
                rendered = post(client, forced(family, [user, reasoning, plain_call, output]))["output"][-1]
                rendered_body = own.posted("/v1/chat/completions")[-1]
                spliced = post(client, forced(family, [user, reasoning, call, output]))["output"][-1]
                spliced_body = own.posted("/v1/chat/completions")[-1]
    assert rendered_body["messages"][1]["reasoning"] == "The user wants the weather; I call the tool."
    assert rendered["prompt_token_ids"] == replay_prompt_ids(rendered_body)
    if source == "inline":  # an upstream that returns no prompt ids cannot show it used the spliced ones
        assert spliced["token_drift"]["outcome"] == "spliced"
        assert "kv_transfer_params" in spliced_body
        assert spliced["prompt_token_ids"] == replay_prompt_ids(spliced_body)
    print(
        f"\n{family} ({source}): reported {len(rendered['prompt_token_ids'])} prompt ids = "
        f"{len(replay_prompt_ids(rendered_body))} rendered for the adapter's request (history has a reasoning item)"
    )


def stream_responses(url: str, body: dict[str, Any]) -> dict[str, Any]:
    with (
        httpx.Client(base_url=url, timeout=300) as client,
        client.stream("POST", "/v1/responses", json={**body, "stream": True}) as r,
    ):
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    done = [e for e in events if e.get("type") in ("response.completed", "response.incomplete")]
    assert len(done) == 1, events[-3:]
    return done[0]["response"]


def stream_chat(url: str, body: dict[str, Any]) -> dict[str, Any]:
    with (
        httpx.Client(base_url=url, timeout=300) as client,
        client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r,
    ):
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    return next(
        c["choices"][0]["delta"]
        for c in reversed(chunks)
        if c.get("choices") and "generation_token_ids" in c["choices"][0]["delta"]
    )


TOKEN_KEYS = ("prompt_token_ids", "generation_token_ids", "token_drift")


def test_streaming_equals_non_streaming(family: str, adapter: str) -> None:
    with httpx.Client(base_url=adapter, timeout=300) as client:
        first = post(client, forced(family, [{"role": "user", "content": "Weather in Oslo?"}]))["output"]
    call = next(item for item in first if item["type"] == "function_call")
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        *first,
        {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'},
    ]
    body = forced(family, history)
    with httpx.Client(base_url=adapter, timeout=300) as client:
        plain = post(client, body)["output"][-1]
    streamed = stream_responses(adapter, body)["output"][-1]
    for key in TOKEN_KEYS:
        assert streamed[key] == plain[key], key
    assert streamed["generation_log_probs"] == pytest.approx(plain["generation_log_probs"], abs=1e-4)
    assert plain["token_drift"]["outcome"] == "spliced"
    # the chat endpoint, with the same carried ids on the assistant message
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["call_id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
            "prompt_token_ids": call["prompt_token_ids"],
            "generation_token_ids": call["generation_token_ids"],
        },
        {"role": "tool", "tool_call_id": call["call_id"], "content": '{"temp": 21}'},
    ]
    chat_tool = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
    chat_body = {
        "messages": messages,
        "tools": [chat_tool],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 64,
        "temperature": 0.0,
        "seed": 1,
        "logit_bias": bias(family),
    }
    with httpx.Client(base_url=adapter, timeout=300) as client:
        r = client.post("/v1/chat/completions", json=chat_body)
    assert r.status_code == 200, r.text
    plain_chat = r.json()["choices"][0]["message"]
    streamed_chat = stream_chat(adapter, chat_body)
    for key in TOKEN_KEYS:
        assert streamed_chat[key] == plain_chat[key], key
    assert plain_chat["prompt_token_ids"] == plain["prompt_token_ids"]  # same messages, same splice


def empty(out: dict[str, Any]) -> bool:
    return (
        out["status"] == "incomplete"
        and out["incomplete_details"] == {"reason": "max_output_tokens"}
        and [item["content"][0]["text"] for item in out["output"]] == [""]
    )


def test_every_context_length_wording_gives_the_empty_result(
    family: str, adapter: str, proxy: RecordingProxy
) -> None:
    long_words = " ".join(["weather"] * 3000)  # ~3,000 tokens: "your prompt contains at least N input tokens"
    long_chars = (
        "x" * 300_000
    )  # more characters than 2,048 tokens can hold: "... N characters (more than ...)"
    with httpx.Client(base_url=adapter, timeout=300) as client:
        seen: dict[str, dict[str, Any]] = {}
        for name, text in (("tokens", long_words), ("characters", long_chars)):
            n = len(proxy.requests)
            seen[name] = post(client, {"input": text, "max_output_tokens": 8})
            seen[f"{name}, streamed"] = stream_responses(adapter, {"input": text, "max_output_tokens": 8})
            assert len(proxy.requests) > n
        # spliced: a first turn's ids carried, then a tool result too long for the context; vLLM
        # checks a prompt given as ids with its own wording ("Input length (N) exceeds ...")
        first = post(client, forced(family, [{"role": "user", "content": "Weather in Lima?"}]))["output"]
        call = next(item for item in first if item["type"] == "function_call")
        history = [{"role": "user", "content": "Weather in Lima?"}, *first]
        big = {"type": "function_call_output", "call_id": call["call_id"], "output": long_words}
        seen["ids"] = post(client, forced(family, [*history, big]))
        seen["ids, streamed"] = stream_responses(adapter, forced(family, [*history, big]))
        # a spliced prompt that fills the context exactly: vLLM caps max_tokens to 0 and refuses it,
        # also when the caller asked for some (the carried generation padded to the length needed)
        small = {"type": "function_call_output", "call_id": call["call_id"], "output": "x"}
        probe = post(client, forced(family, [*history, small]))["output"][-1]
        assert probe["token_drift"]["outcome"] == "spliced"
        filler = MAX_MODEL_LEN - len(probe["prompt_token_ids"])
        gen = call["generation_token_ids"]
        padded = [
            *history[:-1],
            {**history[-1], "generation_token_ids": [*gen[:-1], *[gen[0]] * filler, gen[-1]]},
        ]
        assert "generation_token_ids" in history[-1]
        seen["exactly full"] = post(client, forced(family, [*padded, small]))
    assert (
        len(proxy.posted("/v1/chat/completions")[-1]["kv_transfer_params"]["prompt_token_ids"])
        == MAX_MODEL_LEN
    )
    for name, out in seen.items():
        assert empty(out), f"{family} {name}: {out}"
    wordings = {
        "tokens": "However, your prompt contains at least",
        "characters": "characters (more than",
        "ids": "Input length (",
        "exactly full": "max_tokens must be at least 1, got 0",
    }
    errors = " | ".join(proxy.errors)
    assert all(w in errors for w in wordings.values()), errors
    print(f"\n{family}: the empty result for each wording, plain and streamed: {sorted(seen)}")
