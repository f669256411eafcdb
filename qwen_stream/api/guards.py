"""Guards in front of every route, as plain ASGI middlewares (never BaseHTTPMiddleware: it wraps streamed
bodies and would stand between a response and the client's disconnect, which is how generation stops).

- BodyLimit: refuses a body whose Content-Length is over the limit before reading any of it, and stops a
  chunked one at the limit, so no route ever holds more than the limit in memory.
- HostGuard: serves only trusted Host names. A page on the web whose name is re-pointed at 127.0.0.1 (DNS
  rebinding) would otherwise be same-origin with a server that listens on loopback only.
- OriginGuard: refuses state-changing requests and WebSocket handshakes that a browser sends for a page of
  another origin. A cross-origin form POST needs no CORS preflight, so CORS alone never stops it.

Refusals are JSON {"error": {"code", "message"}} like every other error of the API (api/errors.py)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServerSettings
from ..jobs.service import MAX_JOB_CHARS

KIB = 1024
# Room for everything in a body besides the audio or the text: JSON keys and short fields, multipart part
# headers and boundaries, name, transcript (2000 characters), instructions, language.
FIELD_ALLOWANCE = 64 * KIB
# The longest JSON escape of one character: a surrogate pair, "\ud83d\ude00" (ensure_ascii encoders).
JSON_BYTES_PER_CHAR = 12
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
JSON_AUDIO_PATHS = frozenset({"/tts/stream"})  # the one JSON route that takes audio (legacy base64 ref_audio)
JOB_PATHS = frozenset({"/v1/audio/jobs"})  # long-form text: its own allowance (jobs.service.MAX_JOB_CHARS)


# -- shared --------------------------------------------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (names in ASGI scopes are lower case)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def refuse(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answers with the API's JSON error; a WebSocket handshake is closed with 1008 (policy violation),
    which the server answers with HTTP 403 since the socket was never accepted."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": code})
        return
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- body size -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyLimits:
    multipart: int  # a voice upload (POST /v1/voices): the audio file plus its form fields
    json_audio: int  # /tts/stream's JSON: a base64 `ref_audio` of --max-upload-mb plus the longest text
    json: int  # every other JSON body: the longest text and a few fields (parsed on the event loop)
    other: int = FIELD_ALLOWANCE  # anything else: no route reads more than a few fields of it
    json_job: int = JSON_BYTES_PER_CHAR * MAX_JOB_CHARS + FIELD_ALLOWANCE  # a long-form job: a chapter of text

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> BodyLimits:
        upload = int(settings.max_upload_mb * 2**20)
        base64 = -(-upload // 3) * 4  # 4 characters per 3 bytes, rounded up
        text = JSON_BYTES_PER_CHAR * settings.max_text_chars
        return cls(
            multipart=upload + FIELD_ALLOWANCE, json_audio=base64 + text + FIELD_ALLOWANCE, json=text + FIELD_ALLOWANCE
        )

    def for_request(self, method: str, content_type: str | None, path: str = "") -> int:
        if method not in BODY_METHODS:
            return self.other
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media == "multipart/form-data":
            return self.multipart
        # FastAPI parses a body without a content type as JSON too.
        if media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json")):
            if path in JOB_PATHS:
                return self.json_job
            return self.json_audio if path in JSON_AUDIO_PATHS else self.json
        return self.other


class BodyTooLarge(HTTPException):
    """Raised from receive() at the limit: the route stops reading there, whatever it was doing."""

    def __init__(self, limit: int):
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than this route accepts ({limit} bytes; uploads are bounded by "
        f"--max-upload-mb, texts by --max-text-chars)"
    )


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:  # the server refuses a malformed one before we run; nothing to bound here
        return None


class _CountedBody:
    """The request's receive(), cut at the limit: the app is handed at most `limit` bytes."""

    def __init__(self, receive: Receive, limit: int):
        self._receive, self._limit = receive, limit
        self.seen = 0
        self.overflowed = False

    async def receive(self) -> Message:
        if self.overflowed:
            raise BodyTooLarge(self._limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self._limit:
                self.overflowed = True  # the bytes past the limit are dropped, never handed on
                raise BodyTooLarge(self._limit)
        return message  # http.disconnect passes untouched: streamed responses listen for it


class BodyLimit:
    def __init__(self, app: ASGIApp, limits: BodyLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_request(scope["method"], header(scope, b"content-type"), scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await refuse(scope, send, 413, "too_large", _too_large_message(limit))
            return
        await self._bounded(scope, _CountedBody(receive, limit), send, limit)

    async def _bounded(self, scope: Scope, body: _CountedBody, send: Send, limit: int) -> None:
        """Runs the app on a cut body. Once the body overflowed, whatever the app answers (its own 413, or a
        400 from a parser that saw the error) is replaced by the one 413 of this middleware."""
        started = False

        async def gated_send(message: Message) -> None:
            nonlocal started
            if body.overflowed:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, body.receive, gated_send)
        except Exception:
            if not body.overflowed:
                raise
        if body.overflowed and not started:
            await refuse(scope, send, 413, "too_large", _too_large_message(limit))


# -- Host ----------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _normal_name(name: str) -> str:
    """Lower case, IPv6 literals bracketed as in a Host header ("::1" -> "[::1]")."""
    name = name.strip().lower()
    if ":" in name and not name.startswith("["):
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return name  # name:port
        return f"[{name}]"
    return name


def trusted_hosts(settings: ServerSettings) -> frozenset[str] | None:
    """The Host names served, or None for any. By default a server bound to a loopback address serves only
    loopback names (anything else reaching it is a rebound name); one bound elsewhere serves any name."""
    names = settings.trusted_hosts
    if names is None:
        if not _is_loopback(settings.host):
            return None
        names = (*LOOPBACK_NAMES, settings.host)
    if "*" in names:
        return None
    return frozenset(_normal_name(n) for n in names if n.strip())


def _host_name(host: str) -> str:
    """A Host header without its port: "localhost:9000" -> "localhost", "[::1]:9000" -> "[::1]"."""
    if host.startswith("["):
        name, bracket, rest = host.partition("]")
        # Only a port may follow the address: "[::1]evil.example" names no host we serve.
        return name + bracket if bracket and (not rest or (rest[0] == ":" and rest[1:].isdigit())) else host
    return host.rpartition(":")[0] if ":" in host else host


class HostGuard:
    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.hosts is not None and not self._trusted(scope):
            shown = header(scope, b"host")
            await refuse(
                scope,
                send,
                421,
                "untrusted_host",
                f"this server does not serve the host {shown!r}; add it to --trusted-hosts",
            )
            return
        await self.app(scope, receive, send)

    def _trusted(self, scope: Scope) -> bool:
        host = (header(scope, b"host") or "").strip().lower()
        assert self.hosts is not None  # asked only when a list is set
        return bool(host) and (host in self.hosts or _host_name(host) in self.hosts)


# -- Origin --------------------------------------------------------------------------------------------


def _authority(netloc: str, scheme: str) -> str:
    """host[:port] without the scheme's default port, as browsers write Origin and Host."""
    netloc = netloc.strip().lower()
    default = {"http": ":80", "ws": ":80", "https": ":443", "wss": ":443"}.get(scheme)
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


class OriginPolicy:
    """Which browser pages may change things here: the server's own pages (same origin as the Host the
    request was sent to), and the origins of --cors-origins (* for any, the literal null included)."""

    def __init__(self, cors_origins: Iterable[str]):
        origins = [o.strip() for o in cors_origins if o.strip()]
        self.any = "*" in origins
        self.listed = frozenset(o.rstrip("/").lower() for o in origins)

    def allows(self, origin: str, scope: Scope) -> bool:
        origin = origin.strip().lower()
        return self.any or origin.rstrip("/") in self.listed or self._same_origin(origin, scope)

    @staticmethod
    def _same_origin(origin: str, scope: Scope) -> bool:
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # null, file:, extensions: never our own page
        mine = _authority(parts.netloc, parts.scheme)
        # X-Forwarded-Host: what a reverse proxy that rewrites Host was asked for. A forged cross-origin
        # request cannot carry it: forms cannot set headers, and fetch() needs a CORS preflight to.
        hosts = (header(scope, b"host"), (header(scope, b"x-forwarded-host") or "").split(",")[0])
        return any(h and _authority(h, parts.scheme) == mine for h in hosts)


class OriginGuard:
    def __init__(self, app: ASGIApp, cors_origins: Iterable[str] = ()):
        self.app = app
        self.policy = OriginPolicy(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin") if self._checked(scope) else None
        # No Origin: not a browser page's request (curl, SDKs), or a same-origin GET; nothing to check.
        if origin is not None and not self.policy.allows(origin, scope):
            await refuse(
                scope,
                send,
                403,
                "forbidden_origin",
                f"requests from pages of origin {origin!r} may not change anything here; serve the "
                f"page from this server or list its origin in --cors-origins",
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _checked(scope: Scope) -> bool:
        # Browsers apply no same-origin rule to WebSocket handshakes: each one is checked like a POST.
        return scope["type"] == "websocket" or (scope["type"] == "http" and scope["method"] in STATE_CHANGING)
