"""A resources server's episode-session contract, checked through its real routes in process.

An environment server seeds a resources session under an id it assigns, may retry the seed,
closes it (and may retry the close), may close an id it never managed to seed, and must never
see a closed session come back. `check_resources_session_contract` walks those steps against
the app a server builds; call it from the server's own tests.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from nemo_gym.base_resources_server import (
    ResourcesCloseSessionRequest,
    ResourcesCloseSessionResponse,
    ResourcesSeedSessionRequest,
    ResourcesSeedSessionResponse,
)


def _ok(response: Any, step: str) -> Any:
    assert response.status_code == 200, f"{step}: HTTP {response.status_code} {response.text}"
    return response.json()


def check_resources_session_contract(
    app: Any, seed: ResourcesSeedSessionRequest, *, keeps_state: bool
) -> None:
    """Raise AssertionError at the first step the app gets wrong.

    `seed` must name a session id the app has not seen. With `keeps_state`, a seed that comes
    after its session's close, or after a close of an id never seeded, must be refused; a
    stateless server has nothing such a seed could bring back.
    """
    client = TestClient(app, raise_server_exceptions=False)
    session_id = seed.resources_session_id
    for step in ("seed", "repeated seed"):
        answer = ResourcesSeedSessionResponse.model_validate(
            _ok(client.post("/seed_session", json=seed.model_dump(mode="json")), step)
        )
        assert answer.resources_session_id == session_id, (
            f"{step} answered for {answer.resources_session_id!r}"
        )
    close = ResourcesCloseSessionRequest(resources_session_id=session_id, episode_id=seed.episode_id)
    for step in ("close", "repeated close"):
        answer = ResourcesCloseSessionResponse.model_validate(
            _ok(client.post("/close_session", json=close.model_dump(mode="json")), step)
        )
        assert answer.resources_session_id == session_id, (
            f"{step} answered for {answer.resources_session_id!r}"
        )
    never = seed.model_copy(update={"resources_session_id": f"{session_id}-never-seeded"})
    orphan_close = close.model_copy(update={"resources_session_id": never.resources_session_id})
    _ok(
        client.post("/close_session", json=orphan_close.model_dump(mode="json")),
        "close of a never-seeded session",
    )
    if keeps_state:
        for late in (seed, never):
            response = client.post("/seed_session", json=late.model_dump(mode="json"))
            assert response.status_code >= 400, (
                f"a seed after the close brought session {late.resources_session_id!r} back (HTTP {response.status_code})"
            )


__all__ = ["check_resources_session_contract"]
