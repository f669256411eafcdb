"""The app factory: the only place that imports api/."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .config import ServerSettings
from .service import TTSService


def create_app(settings: ServerSettings, service: TTSService | None = None) -> FastAPI:
    from .api import health, openai, text, tts, voices, webui
    from .api.auth import BearerAuth
    from .api.errors import install_error_handlers

    service = service or TTSService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background so /health can say "loading" instead of refusing connections.
        loading = asyncio.create_task(service.start())
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            await service.stop()

    app = FastAPI(title="qwen-stream", version="0.1.0", lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key)  # inside CORS: refusals carry CORS headers
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "X-Sample-Rate", "X-Sample-Width", "X-Channels", "X-Sample-Format"],
        )
    for module in (tts, voices, health, text, webui):
        app.include_router(module.router)
    openai.install(app, settings)
    return app
