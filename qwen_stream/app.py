"""The app factory: the only place that imports api/."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .config import ServerSettings
from .speech.startup import Server


def create_app(settings: ServerSettings, server: Server | None = None) -> FastAPI:
    from .api import health, jobs, openai, telephony, text, tts, voices, webui, ws
    from .api.errors import install_error_handlers
    from .api.openapi import install_openapi

    server = server or Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background so /health can say "loading" instead of refusing connections.
        loading = asyncio.create_task(server.start())
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            await server.stop()

    app = FastAPI(title="qwen-stream", version="0.1.0", lifespan=lifespan)
    app.state.server = server
    install_error_handlers(app)
    _install_guards(app, settings)
    for module in (tts, ws, telephony, jobs, voices, health, text, webui):
        app.include_router(module.router)
    openai.install(app, settings)
    install_openapi(app, settings)
    return app


def _install_guards(app: FastAPI, settings: ServerSettings) -> None:
    """The middlewares, added innermost first (the last added runs first). A request meets them in this order:

    CORS (when configured): answers preflights before anything else (they carry no key and no body), and
      puts its headers on every answer below it, refusals included, so a browser page can read why;
    Host: nothing is served for a name this server does not answer to;
    Origin: a page of another origin may not change anything, with or without a key (its form POST needs
      no preflight); it is compared with the Host, so it runs after the Host check;
    auth (with --api-key): no body of an unauthorised request is read at all;
    body size: the routes see at most the limit."""
    from .api.auth import BearerAuth
    from .api.guards import BodyLimit, BodyLimits, HostGuard, OriginGuard, trusted_hosts

    app.add_middleware(BodyLimit, limits=BodyLimits.from_settings(settings))
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key, open_listings=settings.open_listings)
    app.add_middleware(OriginGuard, cors_origins=settings.cors_origins)
    app.add_middleware(HostGuard, hosts=trusted_hosts(settings))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "X-Sample-Rate", "X-Sample-Width", "X-Channels", "X-Sample-Format"],
        )
