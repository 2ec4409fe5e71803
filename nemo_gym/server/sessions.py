"""Signed session cookie, as a pure ASGI middleware (no per-request Python middleware stack).

The cookie holds only `<session_id>.<hmac>`; the session dict lives in `scope["session"]`
so `request.session[SESSION_ID_KEY]` works as in Starlette. A missing, forged or tampered
cookie starts a new session: it can never select somebody else's.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from http.cookies import SimpleCookie
from typing import Any

SESSION_ID_KEY = "session_id"
_SIG_LEN = 32


class SessionCookieMiddleware:
    def __init__(
        self, app: Any, cookie_name: str, secret: str | bytes, max_age: int = 14 * 24 * 3600
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        key = secret.encode() if isinstance(secret, str) else secret
        # Bind the key to the cookie name so one instance's cookie is meaningless to another.
        self._key = hmac.new(key, cookie_name.encode(), hashlib.sha256).digest()
        self._prefix = cookie_name.encode() + b"="
        self._set_cookie_suffix = f"; path=/; Max-Age={max_age}; httponly; samesite=lax".encode()

    def sign(self, session_id: str) -> str:
        digest = hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:_SIG_LEN]
        return f"{session_id}.{digest}"

    def verify(self, value: str) -> str | None:
        session_id, _, signature = value.rpartition(".")
        if not session_id or len(signature) != _SIG_LEN:
            return None
        expected = hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:_SIG_LEN]
        return session_id if hmac.compare_digest(expected, signature) else None

    def _session_from_headers(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        for name, value in headers:
            if name == b"cookie" and self._prefix in value:
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:
                    return None
                morsel = cookie.get(self.cookie_name)
                return self.verify(morsel.value) if morsel else None
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session_id = self._session_from_headers(scope["headers"])
        if session_id is not None:
            scope["session"] = {SESSION_ID_KEY: session_id}
            await self.app(scope, receive, send)
            return

        session_id = str(uuid.uuid4())
        scope["session"] = {SESSION_ID_KEY: session_id}
        header = self.cookie_name.encode() + b"=" + self.sign(session_id).encode() + self._set_cookie_suffix

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", header)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
