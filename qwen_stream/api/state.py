"""Typed accessors for what the routes use from app.state: the server, and its services once it is ready
(before that they raise NotReady, which answers 503 not_ready)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from ..speech.service import SpeechService
from ..speech.startup import Server
from ..speech.voices import VoiceService


def server(request: HTTPConnection) -> Server:
    return request.app.state.server


def speech(request: HTTPConnection) -> SpeechService:
    return server(request).speech


def voices(request: HTTPConnection) -> VoiceService:
    return server(request).voices
