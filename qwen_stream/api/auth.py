"""Bearer-key auth (--api-key / API_KEY): every route needs `Authorization: Bearer <key>` except the open
ones below, so a route added later is protected by default.

A plain ASGI middleware, not a BaseHTTPMiddleware: the latter wraps streamed bodies and would stand between
a response and the client's disconnect, which is how generation learns to stop."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Open without a key: the WebUI page itself (not the API calls it makes), liveness for orchestrators,
# Prometheus scraping (counters only: no request content, no secrets), and the API docs.
OPEN_PATHS = frozenset({"/", "/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class BearerAuth:
    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send)

    @staticmethod
    def _open(scope: Scope) -> bool:
        # CORS preflights carry no credentials by design; the CORS middleware (outside this one) answers them.
        return scope["path"] in OPEN_PATHS or (scope["type"] == "http" and scope["method"] == "OPTIONS")

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # Compared in constant time: the time taken says nothing about how much of the key matched.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": {"code": "unauthorized",
                                 "message": "missing or wrong API key: send 'Authorization: Bearer <key>'"}}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer realm="qwen-stream"')]})
    await send({"type": "http.response.body", "body": body})
