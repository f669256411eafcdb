"""The speech layer's domain errors. They know no HTTP status codes beyond a hint; api/errors.py maps them."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """Bad input; `code` names the problem for clients (empty_text, text_too_long, unknown_voice...)."""

    status = 400

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class TooLarge(InvalidRequest):
    """An upload over its limit (the body guard refuses most before they are read; this is the rest)."""

    status = 413

    def __init__(self, message: str):
        super().__init__("too_large", message)


class NotFound(LookupError):
    def __init__(self, what: str):
        super().__init__(what)


class NotReady(RuntimeError):
    def __init__(self, state: str, detail: str | None = None):
        super().__init__(detail or f"the model is {state}; retry when GET /health answers 200")
        self.state = state


class StreamFailed(RuntimeError):
    """Generation failed after the response started."""
