"""`ng_init_resources_server +entrypoint=resources_servers/<name>`: a new environment that runs.

The folder it writes is a complete, working environment (a tool, a verifier that compares the
answer with `expected_answer`, a config with its agent, two example rows, and tests that pass), so
a user starts from something that runs end to end and edits it.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import PROJECT_ROOT, ConfigError

COMMAND = "ng_init_resources_server"
SUMMARY = "create a new resources server folder (app, config with its agent, data, tests) that runs as is."
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

APP = '''"""{name}: one tool (`lookup`) and a verifier that rewards an answer containing `expected_answer`."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

FACTS = {{"capital of france": "Paris", "largest planet": "Jupiter"}}


class {cls}Config(BaseResourcesServerConfig):
    pass


class LookupRequest(BaseModel):
    query: str


class LookupResponse(BaseModel):
    query: str
    answer: str | None


class {cls}VerifyRequest(BaseVerifyRequest):
    model_config = ConfigDict(extra="allow")
    expected_answer: str


class {cls}VerifyResponse(BaseVerifyResponse):
    model_config = ConfigDict(extra="allow")


def final_answer(body: BaseVerifyRequest) -> str:
    """The text of the last assistant message of the rollout."""
    texts = [
        part.text
        for item in body.response.output
        if getattr(item, "type", None) == "message"
        for part in getattr(item, "content", [])
        if getattr(part, "type", None) == "output_text"
    ]
    return texts[-1] if texts else ""


class {cls}(SimpleResourcesServer):
    config: {cls}Config

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/lookup")(self.lookup)
        return app

    async def lookup(self, body: LookupRequest) -> LookupResponse:
        return LookupResponse(query=body.query, answer=FACTS.get(body.query.strip().lower()))

    async def verify(self, body: {cls}VerifyRequest) -> {cls}VerifyResponse:
        correct = body.expected_answer.lower() in final_answer(body).lower()
        return {cls}VerifyResponse(**body.model_dump(), reward=1.0 if correct else 0.0)


if __name__ == "__main__":
    {cls}.run_webserver()
'''

CONFIG = """{name}:
  resources_servers:
    {name}:
      entrypoint: app.py
{name}_simple_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server:
        type: resources_servers
        name: {name}
      model_server:
        type: responses_api_models
        name: policy_model
      max_steps: 8
"""

TOOL = (
    '{{"type": "function", "name": "lookup", "description": "Look a fact up.", "parameters": '
    '{{"type": "object", "properties": {{"query": {{"type": "string"}}}}, "required": ["query"], '
    '"additionalProperties": false}}, "strict": true}}'
)
ROW = (
    '{{"responses_create_params": {{"input": [{{"role": "user", "content": "{question}"}}], '
    '"tools": [' + TOOL + ']}}, "expected_answer": "{answer}"}}\n'
)

TESTS = '''"""{name}'s tool and verifier."""

from __future__ import annotations

import httpx

from resources_servers.{name}.app import {cls}, {cls}Config


def rollout(answer: str) -> dict:
    return {{
        "id": "resp_1",
        "object": "response",
        "created_at": 1.0,
        "model": "m",
        "output": [
            {{
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{{"type": "output_text", "text": answer, "annotations": []}}],
            }}
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }}


async def test_lookup_and_verify() -> None:
    app = {cls}(config={cls}Config()).build_asgi()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
        found = (await client.post("/lookup", json={{"query": "Capital of France"}})).json()
        assert found == {{"query": "Capital of France", "answer": "Paris"}}
        row = {{"responses_create_params": {{"input": "q"}}, "expected_answer": "Paris"}}
        right = (await client.post("/verify", json={{**row, "response": rollout("It is Paris.")}})).json()
        wrong = (await client.post("/verify", json={{**row, "response": rollout("Lyon")}})).json()
        assert (right["reward"], wrong["reward"]) == (1.0, 0.0)
'''

README = """# {name}

A resources server made by `ng_init_resources_server`: a `lookup` tool and a verifier that gives
reward 1.0 when the final answer contains the row's `expected_answer`.

```bash
.venv/bin/ng_run "+config_paths=[{path}/configs/{name}.yaml,responses_api_models/vllm_model/configs/vllm_model.yaml]"
.venv/bin/ng_collect_rollouts +agent_name={name}_simple_agent \\
    +input_jsonl_fpath={path}/data/example.jsonl +output_jsonl_fpath=results/{name}.jsonl
.venv/bin/ng_test +entrypoint={path}
```
"""


class InitResourcesServerConfig(CommandKeys):
    """ng_init_resources_server's keys."""

    entrypoint: str | None = Field(
        None, description="The folder to create, resources_servers/<name> (name: lowercase, digits, _)."
    )


def scaffold(folder: Path) -> list[Path]:
    """Write a working resources server into `folder` (which must not exist); the files written."""
    name = folder.name
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a valid server name (lowercase letters, digits and _, starting with a letter)",
            key="entrypoint",
            source="command line",
        )
    if folder.exists():
        raise ConfigError(
            f"{folder} already exists; pick a new name", key="entrypoint", source="command line"
        )
    cls = "".join(part.capitalize() for part in name.split("_"))
    relative = folder.relative_to(PROJECT_ROOT) if folder.is_relative_to(PROJECT_ROOT) else folder
    files = {
        "__init__.py": "",
        "app.py": APP.format(name=name, cls=cls),
        f"configs/{name}.yaml": CONFIG.format(name=name),
        "data/example.jsonl": ROW.format(question="What is the capital of France?", answer="Paris")
        + ROW.format(question="Which is the largest planet?", answer="Jupiter"),
        "tests/__init__.py": "",
        f"tests/test_{name}.py": TESTS.format(name=name, cls=cls),
        "README.md": README.format(name=name, path=relative),
    }
    written = []
    for relative_path, text in files.items():
        path = folder / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


KEYS = InitResourcesServerConfig  # the command's keys (`gym` renders --help from them)


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, InitResourcesServerConfig, args, config_names=False)
    entry = (keys.entrypoint or "").strip("/")
    parts = Path(entry).parts
    if len(parts) != 2 or parts[0] != "resources_servers":
        raise ConfigError(
            "must be resources_servers/<name>, e.g. +entrypoint=resources_servers/my_env",
            key="entrypoint",
            source="command line",
        )
    written = scaffold(PROJECT_ROOT / entry)
    print(f"Created {entry} ({len(written)} files); its README says how to run and test it.")
    return 0


# NeMo Gym's `nemo_gym.cli.init_resources_server`.
init_resources_server = cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)

if __name__ == "__main__":
    cli()
