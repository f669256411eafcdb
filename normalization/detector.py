"""The statistical language detector: lingua, restricted to the languages Qwen3-TTS speaks.

lingua (``lingua-language-detector``) is a maintained detector built for short text; its n-gram models
ship inside the wheel, so nothing is downloaded. The detector is built once, on first use, in
high-accuracy mode (the low-accuracy mode misreads sentences of two or three words, which is what a
voice chat sends) with lazily loaded models: a language's models are read the first time a text in its
script reaches the detector, so a server that only ever sees Latin text never loads Russian's.
Measured figures are in docs/normalization.md.
"""

from __future__ import annotations

import threading
from typing import Any

# lingua's names for ours; Chinese, Japanese and Korean are decided by script before the detector runs,
# but they stay in the set so that a stray CJK character never pulls a Latin language.
_LINGUA_NAMES = {
    "Chinese": "CHINESE",
    "English": "ENGLISH",
    "Japanese": "JAPANESE",
    "Korean": "KOREAN",
    "German": "GERMAN",
    "French": "FRENCH",
    "Russian": "RUSSIAN",
    "Portuguese": "PORTUGUESE",
    "Spanish": "SPANISH",
    "Italian": "ITALIAN",
}
# Detection reads at most this many characters: the cost stays bounded on hostile input, and a
# sentence is capped at 120 characters anyway.
MAX_DETECT_CHARS = 200

_lock = threading.Lock()
_detector: Any = None
_ours: dict[Any, str] = {}


def _build() -> Any:
    global _detector
    with _lock:
        if _detector is None:
            # Imported here: nothing happens at import time of the package.
            from lingua import Language, LanguageDetectorBuilder

            languages = [getattr(Language, name) for name in _LINGUA_NAMES.values()]
            _ours.update({getattr(Language, lingua): ours for ours, lingua in _LINGUA_NAMES.items()})
            _detector = LanguageDetectorBuilder.from_languages(*languages).build()
        return _detector


def confidences(text: str) -> list[tuple[str, float]]:
    """(language, confidence) pairs, best first, confidences summing to 1 (empty if undecidable)."""
    values = _build().compute_language_confidence_values(text[:MAX_DETECT_CHARS])
    return [(_ours[v.language], v.value) for v in values if v.value > 0]


def spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, language) runs of a mixed-language text, in order, covering the detected words."""
    results = _build().detect_multiple_languages_of(text)
    return [(r.start_index, r.end_index, _ours[r.language]) for r in results]


def warm() -> float:
    """Build the detector and read its Latin and Cyrillic models now; returns seconds taken.

    lingua loads a model on first need; a language's script decides which: the first Latin sentence
    reads the models of all six Latin-script languages (~170 MB, ~1 s), the first Cyrillic one Russian's.
    """
    import time

    started = time.perf_counter()
    confidences("Das ist gut, merci.")
    confidences("Это хорошо.")
    return time.perf_counter() - started
