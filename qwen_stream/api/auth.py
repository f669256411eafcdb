"""Bearer-key auth (--api-key / API_KEY): every route needs `Authorization: Bearer <key>` except the open
ones below, so a route added later is protected by default.

A plain ASGI middleware, not a BaseHTTPMiddleware: the latter wraps streamed bodies and would stand between
a response and the client's disconnect, which is how generation learns to stop."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from .guards import refuse

# Open without a key: the WebUI page itself (not the API calls it makes), liveness for orchestrators,
# Prometheus scraping (counters only: no request content, no secrets), and the API docs.
OPEN_PATHS = frozenset({"/", "/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

# With --open-listings (the default): the listings OpenAI clients read before they send a key. Open WebUI
# asks for /audio/voices and /audio/models without its Authorization header and, refused, silently offers
# its own voice list instead. They hold names only. GET /v1/voices stays behind the key: it carries the
# transcripts and descriptions users gave their voices.
LISTING_PATHS = frozenset({"/v1/models", "/v1/audio/models", "/v1/audio/voices"})
READ_METHODS = frozenset({"GET", "HEAD"})


class BearerAuth:
    def __init__(self, app: ASGIApp, api_key: str, open_listings: bool = False):
        self.app = app
        self._key = api_key.encode("utf-8")
        self._listings = LISTING_PATHS if open_listings else frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await refuse(
            scope,
            send,
            401,
            "unauthorized",
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            headers=[(b"www-authenticate", b'Bearer realm="qwen-stream"')],
        )

    def _open(self, scope: Scope) -> bool:
        if scope["path"] in OPEN_PATHS:
            return True
        if scope["type"] != "http":
            return False
        # CORS preflights carry no credentials by design; the CORS middleware (outside this one) answers them.
        if scope["method"] == "OPTIONS":
            return True
        # Only for requests that send no key: a key that is sent must be right, here too, so a client that
        # tests its key by listing models (as the SDKs' "check connection" buttons do) learns it is wrong.
        return (
            scope["method"] in READ_METHODS
            and scope["path"] in self._listings
            and not any(name == b"authorization" for name, _ in scope.get("headers", ()))
        )

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # Compared in constant time: the time taken says nothing about how much of the key matched.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
            if name == b"x-api-key":  # Cartesia's clients (Pipecat's CartesiaTTSService) send the key so
                return hmac.compare_digest(value.strip(), self._key)
        if scope["type"] == "websocket":
            # A browser cannot set headers on a WebSocket: the key may come as ?api_key= (never for HTTP, where
            # it would end up in access logs and caches for no need).
            for key in parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", []):
                return hmac.compare_digest(key.encode("utf-8"), self._key)
        return False
