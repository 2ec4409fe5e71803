"""The scripted model and resources servers every simple_agent test talks to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nemo_gym.http.server_client import close_shared_client
from nemo_gym.testing.scripted_server import ScriptedServer


@pytest.fixture
async def servers() -> AsyncIterator[tuple[ScriptedServer, ScriptedServer]]:
    model, res = ScriptedServer(), ScriptedServer()
    async with model.running(), res.running():
        yield model, res
    await close_shared_client()
