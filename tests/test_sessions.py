"""Session cookies as NeMo Gym environments rely on them: every response carries the cookie,
and what a handler stores in `request.session` (more keys, a replaced id) comes back."""

from __future__ import annotations

from http.cookiejar import CookieJar

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from nemo_gym.server.sessions import SESSION_ID_KEY, SessionCookieMiddleware, SessionSigner

# These tests send each response's cookies with the next request on purpose (a client that keeps
# only the last response's cookies), which Starlette's TestClient flags as deprecated style.
pytestmark = pytest.mark.filterwarnings("ignore:Setting per-request cookies:DeprecationWarning")

COOKIE = "Demo___demo"


class _NoJar(CookieJar):
    def extract_cookies(self, response: object, request: object) -> None:
        pass  # only cookies passed explicitly reach the server


def _app() -> FastAPI:
    app = FastAPI()
    counts: dict[str, int] = {}

    @app.post("/add/{n}")
    async def add(n: int, request: Request) -> dict:
        sid = request.session[SESSION_ID_KEY]
        counts[sid] = counts.get(sid, 0) + n
        return {"count": counts[sid]}

    @app.post("/remember/{value}")
    async def remember(value: str, request: Request) -> dict:
        request.session["remembered"] = value
        return {}

    @app.post("/recall")
    async def recall(request: Request) -> dict:
        return dict(request.session)

    @app.post("/rename/{sid}")
    async def rename(sid: str, request: Request) -> dict:
        request.session[SESSION_ID_KEY] = sid
        return {}

    app.add_middleware(SessionCookieMiddleware, signer=SessionSigner(COOKIE, "secret"))
    return app


def test_every_response_carries_the_cookie_so_the_last_one_keeps_the_session():
    client = TestClient(_app(), cookies=_NoJar())
    first = client.post("/add/4")
    assert first.json() == {"count": 4}
    second = client.post("/add/3", cookies=first.cookies)
    assert second.json() == {"count": 7}
    assert second.cookies[COOKIE] == first.cookies[COOKIE]
    third = client.post("/add/1", cookies=second.cookies)
    assert third.json() == {"count": 8}
    assert client.post("/add/2").json() == {"count": 2}  # no cookie: a new session


def test_extra_keys_travel_in_the_cookie():
    client = TestClient(_app(), cookies=_NoJar())
    start = client.post("/recall")
    sid = start.json()[SESSION_ID_KEY]
    stored = client.post("/remember/blue", cookies=start.cookies)
    assert stored.cookies[COOKIE] != start.cookies[COOKIE]
    back = client.post("/recall", cookies=stored.cookies)
    assert back.json() == {SESSION_ID_KEY: sid, "remembered": "blue"}
    assert back.cookies[COOKIE] == stored.cookies[COOKIE]


def test_a_replaced_session_id_sticks():
    client = TestClient(_app(), cookies=_NoJar())
    renamed = client.post("/rename/mine", cookies=client.post("/recall").cookies)
    assert client.post("/recall", cookies=renamed.cookies).json() == {SESSION_ID_KEY: "mine"}


def test_tampered_dict_cookie_starts_a_new_session():
    signer = SessionSigner(COOKIE, "secret")
    value = signer.encode({SESSION_ID_KEY: "a", "role": "user"})
    assert signer.decode(value) == {SESSION_ID_KEY: "a", "role": "user"}
    payload, _, signature = value.rpartition(".")
    forged = signer.encode({SESSION_ID_KEY: "a", "role": "admin"}).rpartition(".")[0] + "." + signature
    assert signer.decode(forged) is None
    assert SessionSigner(COOKIE, "other secret").decode(value) is None
    client = TestClient(_app(), cookies=_NoJar())
    session = client.post("/recall", cookies={COOKIE: forged}).json()
    assert set(session) == {SESSION_ID_KEY} and session[SESSION_ID_KEY] != "a"


def test_bare_id_cookie_and_its_session_id():
    signer = SessionSigner(COOKIE, "secret")
    assert signer.encode({SESSION_ID_KEY: "abc"}) == signer.sign("abc")
    assert signer.decode(signer.sign("abc")) == {SESSION_ID_KEY: "abc"}
    assert signer.session_id_of(signer.encode({SESSION_ID_KEY: "abc", "k": 1})) == "abc"
    # An id that looks like a dict payload is carried as a dict, so it decodes to itself.
    assert signer.decode(signer.encode({SESSION_ID_KEY: "~x"})) == {SESSION_ID_KEY: "~x"}
