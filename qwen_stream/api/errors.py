"""Every error the API returns, mapped in one place, as JSON {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..generation import SynthesisError
from ..speech.errors import InvalidRequest, NotFound, NotReady
from ..speech.queues import Overloaded, QueueFull
from ..speech.voice_store import InsufficientStorage

log = logging.getLogger("qwen_stream.api")


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "the request body is not valid JSON"
    unicode = [e for e in errors if e.get("type") == "string_unicode"]
    if unicode:  # a lone surrogate (JSON's "\ud800"): no tokenizer can take it
        where = ".".join(str(p) for p in unicode[0].get("loc", ()) if p != "body")
        return "invalid_text", f"{where} is not valid Unicode (a lone surrogate)"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        if e.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid_request", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError):
        code, message = _describe_validation(exc)
        return error_response(400, code, message)

    @app.exception_handler(InvalidRequest)
    async def invalid(request: Request, exc: InvalidRequest):
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(SynthesisError)
    async def unservable(request: Request, exc: SynthesisError):  # what the engine refuses to generate
        return error_response(400, "invalid_request", str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(InsufficientStorage)
    async def insufficient_storage(request: Request, exc: InsufficientStorage):
        return error_response(507, "insufficient_storage", str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return error_response(429, exc.code, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return error_response(503, exc.code, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        return error_response(
            503, "not_ready" if exc.state == "loading" else "model_failed", str(exc), headers={"Retry-After": "5"}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; see the server log")
