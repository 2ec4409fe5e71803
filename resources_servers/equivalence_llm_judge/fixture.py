"""A judge for equivalence_llm_judge's verifier fixture that answers each contract case with the
case's canned text (`fixture_judge_text`), so the cases run in process without a judge model."""

from __future__ import annotations

from typing import Any

import orjson


class _CannedReply:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status = 200
        self._content = orjson.dumps(body)

    async def read(self) -> bytes:
        return self._content


class CannedJudgeClient:
    """Stands in for the server client: every judge call answers `text` and is recorded."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[dict[str, Any]] = []

    async def post(self, server_name: str, url_path: str, json: Any = None, **_: Any) -> _CannedReply:
        self.calls.append({"server_name": server_name, "url_path": url_path, "json": json})
        message = {
            "id": "msg_fixture",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": self.text, "annotations": []}],
        }
        return _CannedReply(
            {"id": "resp_fixture", "object": "response", "status": "completed", "output": [message]}
        )


async def verify_with_canned_judge(server: Any, request: Any) -> Any:
    """The verify of one contract case, its judge answering `request.fixture_judge_text`."""
    server.server_client = CannedJudgeClient(request.fixture_judge_text)
    return await server.verify(request)
