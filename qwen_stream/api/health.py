"""/health and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .state import server

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request):
    status, body = server(request).health()
    return JSONResponse(body, status_code=status)


@router.get("/metrics")
async def metrics(request: Request):
    metrics = server(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)
