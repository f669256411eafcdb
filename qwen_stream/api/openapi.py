"""The OpenAPI schema states the errors the server really returns, so schema-driven clients and fuzzers agree
with it: FastAPI's default 422 goes (validation errors are 400 here), and each operation lists the statuses
that the guards, auth, the service and its own route can answer, all with the one error shape."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..config import ServerSettings
from .auth import LISTING_PATHS, OPEN_PATHS

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "what went wrong, for programs"},
                "message": {"type": "string", "description": "what to do, for people"},
            },
        }
    },
}

DESCRIPTIONS = {
    400: "bad input: invalid_json, invalid_request (the field is named), empty_text, text_too_long, invalid_text, "
    "unknown_language, unknown_voice, ...",
    401: "missing or wrong API key (--api-key)",
    403: "forbidden_origin: a page of another origin may not change anything here",
    404: "not_found",
    413: "too_large: the body is over the limit",
    421: "untrusted_host: the Host header names a host this server does not serve",
    429: "queue_full: the client already has --max-queue requests waiting, or server_busy: --max-clients clients "
    "have work in flight (Retry-After)",
    503: "not_ready: the model is still loading, or model_failed, or overloaded: the estimated wait for the engine "
    "is over --max-wait-ms (Retry-After)",
    507: "insufficient_storage: the disk is full; nothing was stored",
}

# Route-specific statuses beyond the shared rules below.
_SPEECH = {429, 503}
_EXTRA: dict[tuple[str, str], set[int]] = {
    ("post", "/tts/stream"): _SPEECH,
    ("post", "/v1/audio/speech"): _SPEECH,
    ("post", "/tts/interrupt"): {503},
    ("post", "/v1/voices"): {503, 507},
    ("post", "/v1/voices/design"): {503, 507},
    ("get", "/v1/voices"): {503},
    ("get", "/v1/audio/voices"): {503},
}


def statuses(method: str, path: str, settings: ServerSettings, takes_input: bool = True) -> set[int]:
    """Every error status an operation can answer (takes_input: it has a body or parameters to refuse)."""
    found = {421} | _EXTRA.get((method, path), set())
    if takes_input:
        found.add(400)
    found.add(413)  # a body over its limit, on any method (GET and DELETE bodies are bounded too)
    if method in ("post", "put", "patch", "delete"):
        found.add(403)
    if "{" in path:
        found |= {404, 503}
    open_without_key = path in OPEN_PATHS or (settings.open_listings and path in LISTING_PATHS)
    if settings.api_key and not open_without_key:
        found.add(401)
    return found


def install_openapi(app: FastAPI, settings: ServerSettings) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _document_errors(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def _document_errors(schema: dict, settings: ServerSettings) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            takes_input = "requestBody" in operation or bool(operation.get("parameters"))
            for status in sorted(statuses(method, path, settings, takes_input)):
                responses[str(status)] = {"description": DESCRIPTIONS[status], "content": error}
    health = schema["paths"].get("/health", {}).get("get")
    if health is not None:  # not the error shape: the same body as 200, with the state
        health["responses"]["503"] = {"description": "loading, or failed to load: {status, error}"}
