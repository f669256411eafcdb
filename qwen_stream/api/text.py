"""/v1/normalize: what the model will read, for users checking the text front end; /v1/languages: the
language names requests may send, so that clients (the WebUI) need no copy of them."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ..catalog import LANGUAGES
from ..speech.checks import check_input_text
from ..speech.errors import InvalidRequest
from .protocol import NormalizeRequest, NormalizeResponse
from .state import server

router = APIRouter(tags=["text"])


class LanguagesResponse(BaseModel):
    languages: list[str]  # display case, "Auto" first: the order a language picker shows them in


@router.get("/v1/languages", response_model=LanguagesResponse)
async def languages():
    """Every language name `language` fields accept (any case), from the catalog of published facts."""
    return {"languages": list(LANGUAGES)}


@router.post("/v1/normalize", response_model=NormalizeResponse)
async def normalize_text(body: NormalizeRequest, request: Request):
    import normalization

    check_input_text(
        body.text, server(request).settings.max_text_chars
    )  # the same limits as speech: this is its front end
    try:
        language = normalization.canonical_language(body.language)
    except normalization.UnsupportedLanguage as e:
        raise InvalidRequest("unknown_language", str(e)) from e
    segments = await asyncio.wrap_future(
        normalization.normalize_in_worker(body.text, language, enable_tn=body.normalize)
    )
    return {"segments": [{"text": s.text, "language": s.language} for s in segments]}
