"""/health and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request):
    status, body = request.app.state.service.health()
    return JSONResponse(body, status_code=status)


@router.get("/metrics")
async def metrics(request: Request):
    service = request.app.state.service
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
