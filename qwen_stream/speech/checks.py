"""Checks on what a client sends, shared by every route that takes it: done once, before a queue place is
confirmed, so a refused request changes nothing."""

from __future__ import annotations

import unicodedata

import normalization

from ..generation import valid_unicode
from .errors import InvalidRequest
from .queues import valid_client_id


def check_client_id(client_id: str) -> None:
    if not valid_client_id(client_id):
        raise InvalidRequest("invalid_request", "client_id: 1 to 128 printable ASCII characters, no spaces")


def check_text(text: str, field: str, required: bool = True) -> None:
    """Text the tokenizer can take: UTF-8 encodable (no lone surrogates from JSON's \\ud800), and with
    something to say besides spaces, controls and format characters (zero-width spaces, NULs)."""
    if not valid_unicode(text):
        raise InvalidRequest("invalid_text", f"{field} is not valid Unicode (a lone surrogate)")
    if required and all(unicodedata.category(ch)[0] in "CZ" for ch in text):
        raise InvalidRequest("empty_text", f"{field} has nothing to speak" if text else f"{field} is empty")


def check_input_text(text: str, max_chars: int) -> None:
    """What any text route accepts: speakable, valid Unicode, within --max-text-chars."""
    check_text(text, "text")
    if len(text) > max_chars:
        raise InvalidRequest("text_too_long", f"text has {len(text)} characters; the limit is {max_chars}")


def canonical_language(language: str | None) -> str:
    try:
        return normalization.canonical_language(language or "Auto")
    except normalization.UnsupportedLanguage as e:
        raise InvalidRequest("unknown_language", str(e)) from e
