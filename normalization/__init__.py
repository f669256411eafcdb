"""Text front end: sentence splitting, language pick, abbreviation spell-out and text normalization
(WeTextProcessing for Chinese and English, num2words and our rules for the other eight languages).

    segments = normalize("我用iPhone打电话，价格是¥1200.50。It costs $12.50!")
    # [Segment(text='我用iPhone打电话，价格是一千二百元五角。', language='Chinese'),
    #  Segment(text='It costs twelve dollars fifty cents!', language='English')]

All the work runs on one dedicated thread (see tn_worker). ``normalize`` blocks; from asyncio use
``await asyncio.wrap_future(normalize_in_worker(...))``. Nothing is loaded at import time; call
``warmup()`` at server start so the first request does not pay ~1-2 s of grammar loading and ~1 s
of language-detector loading.
This package never imports torch. See docs/normalization.md for the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future

from . import detector, tn_worker
from .abbreviations import SPOKEN_AS_WORDS
from .language import LANGUAGES, UnsupportedLanguage, canonical_language, language_spans
from .pipeline import Segment, run

__all__ = [
    "LANGUAGES",
    "SPOKEN_AS_WORDS",
    "Segment",
    "UnsupportedLanguage",
    "canonical_language",
    "language_spans",
    "normalize",
    "normalize_in_worker",
    "warmup",
]


def _validated(text: str, language: str, max_chars: int | None) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer or None, not {max_chars!r}")
    return canonical_language(language)


def normalize_in_worker(
    text: str,
    language: str = "Auto",
    *,
    enable_tn: bool = True,
    max_chars: int | None = None,
    spoken_words: Iterable[str] = (),
) -> Future[list[Segment]]:
    """Run the pipeline on the normalization thread. Bad arguments raise here, not in the future.

    Do not wait on the returned future from the normalization thread itself (call normalize() there).
    """
    canonical = _validated(text, language, max_chars)
    return tn_worker.submit(run, text, canonical, enable_tn, max_chars, tuple(spoken_words))


def normalize(
    text: str,
    language: str = "Auto",
    *,
    enable_tn: bool = True,
    max_chars: int | None = None,
    spoken_words: Iterable[str] = (),
) -> list[Segment]:
    """Split ``text`` into segments, pick each one's language and normalize it for speech.

    language: one of LANGUAGES (any case); "Auto" decides per sentence.
    enable_tn: False only splits and picks languages; no character of the text changes.
    max_chars: length cap per segment (input characters); default 60 for CJK, 120 otherwise.
    spoken_words: extra all-caps words read as words, added to SPOKEN_AS_WORDS for this call.
    Thread-safe and blocking; empty or blank text gives [].
    """
    canonical = _validated(text, language, max_chars)
    if tn_worker.on_worker_thread():  # called from the worker itself: waiting on it would deadlock
        return run(text, canonical, enable_tn, max_chars, tuple(spoken_words))
    return normalize_in_worker(
        text, canonical, enable_tn=enable_tn, max_chars=max_chars, spoken_words=spoken_words
    ).result()


def warmup() -> float:
    """Load the zh/en grammars and the language detector on the normalization thread now (idempotent).

    Returns the seconds taken. The other languages' rules are cheap and load on first use.
    """
    seconds = tn_worker.warmup()
    return seconds + tn_worker.submit(detector.warm).result()
