"""The built-in client at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from .errors import error_response

router = APIRouter(tags=["webui"])
WEBUI = Path(__file__).resolve().parents[2] / "webui.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index():
    if not WEBUI.is_file():
        return error_response(404, "not_found", "webui.html is not installed beside the server")
    return HTMLResponse(WEBUI.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})
