"""WeTextProcessing's normalizers and the one thread that runs them.

Every grammar call, and the whole pipeline around it, runs on a single dedicated thread:
WeTextProcessing is 2-4x slower on the main thread (glibc malloc arenas) and its calls hold the GIL,
so a pool would buy nothing. The thread and the grammars are created on first use (or by warmup());
importing this module does no work.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

GRAMMAR_LANGUAGES = ("Chinese", "English")
# Grammar outputs are cached by span: LLM text repeats its numbers, and the spans are short.
CACHE_SPANS = 4096


class _Normalizer(Protocol):
    def normalize(self, text: str) -> str: ...


_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_local = threading.local()
_grammars: dict[str, _Normalizer] = {}


def _mark_worker() -> None:
    _local.is_worker = True


def on_worker_thread() -> bool:
    return getattr(_local, "is_worker", False)


def submit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Run ``fn`` on the normalization thread (started on first use)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(1, thread_name_prefix="normalization", initializer=_mark_worker)
        executor = _executor
    return executor.submit(fn, *args, **kwargs)


def _load(language: str) -> _Normalizer:
    # Imported here: pynini and the grammar files are heavy and only the worker needs them.
    if language == "Chinese":
        from tn.chinese.normalizer import Normalizer
    else:
        from tn.english.normalizer import Normalizer
    # The package logs every load at INFO through its own handler; keep its warnings only.
    logging.getLogger("wetext").setLevel(logging.WARNING)
    started = time.perf_counter()
    # Prebuilt grammars ship with the wheel: this reads two FST files, it builds or fetches nothing.
    normalizer = Normalizer()
    log.info("loaded %s text normalization grammar in %.2f s", language, time.perf_counter() - started)
    return normalizer


def _grammar(language: str) -> _Normalizer:
    if not on_worker_thread():
        raise RuntimeError("WeTextProcessing must only be called on the normalization thread")
    normalizer = _grammars.get(language)
    if normalizer is None:
        normalizer = _grammars[language] = _load(language)
    return normalizer


@functools.lru_cache(maxsize=CACHE_SPANS)
def run_grammar(span: str, language: str) -> str:
    """WeTextProcessing on one span; ``language`` is "Chinese" or "English". Worker thread only."""
    return _grammar(language).normalize(span)


def load_grammar(language: str) -> float:
    """Load one grammar ("Chinese" or "English") on the worker; seconds spent, 0.0 if already loaded."""
    if not on_worker_thread():
        return submit(load_grammar, language).result()
    if language in _grammars:
        return 0.0
    started = time.perf_counter()
    _grammar(language)
    return time.perf_counter() - started


def warmup() -> float:
    """Start the thread and load both grammars now (idempotent); returns the seconds it took."""
    started = time.perf_counter()
    for language in GRAMMAR_LANGUAGES:
        load_grammar(language)
    return time.perf_counter() - started
