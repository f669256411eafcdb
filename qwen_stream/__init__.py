"""qwen-stream: a low-latency streaming text-to-speech server on Qwen3-TTS.

Importing the package quiets what qwen-tts and its dependencies print at import and load time that is
no problem for this server, each at its source, before anything imports them (qwen_tts is imported from
several modules: model loading, the tiny checkpoint builder, the voice library). `model.load_model`
logs one line of ours instead where the fact matters (SoX absent, flash-attn absent).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import io
import logging
import os
import re
import shutil
import sys


@contextlib.contextmanager
def _sox_probe_without_shell():
    """The `sox` package (imported by qwen-tts' 25 Hz tokenizer, which the 12 Hz models never use) probes
    for its binary at import with `os.popen('sox -h')`. Without the binary, /bin/sh writes
    "/bin/sh: 1: sox: not found" straight to file descriptor 2, out of reach of any logging filter. When
    the binary is not on PATH we answer that one probe ourselves with what the shell's stdout would hold
    (nothing), so the package sets NO_SOX exactly as it would have, and no shell runs."""
    if shutil.which("sox") is not None:
        yield
        return
    popen = os.popen

    def probe(cmd, *args, **kwargs):
        return io.StringIO("") if cmd == "sox -h" else popen(cmd, *args, **kwargs)

    os.popen = probe
    try:
        yield
    finally:
        os.popen = popen


# qwen-tts' whisper_encoder (25 Hz tokenizer, unused here) print()s this banner at import when flash-attn is
# absent. It is no warning for us: our models run on sdpa unless flash-attn is installed on a GPU.
_FLASH_BANNER = re.compile(r"\n?\*+\nWarning: flash-attn is not installed\.[^\n]*\n\*+\n[ \t]*\n?")


@contextlib.contextmanager
def _without_flash_attn_banner():
    """Captures stdout while that one module executes (it fails its flash-attn import in milliseconds),
    drops the banner and passes anything else through unchanged."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        rest = _FLASH_BANNER.sub("", captured.getvalue(), count=1)
        if rest:
            sys.stdout.write(rest)


_QUIET_IMPORTS = {
    "sox": _sox_probe_without_shell,
    "qwen_tts.core.tokenizer_25hz.vq.whisper_encoder": _without_flash_attn_banner,
}


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's own loader inside one of the contexts above; everything else is delegated."""

    def __init__(self, loader, context):
        self._loader, self._context = loader, context

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with self._context():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # get_source, get_resource_reader, ... as the real loader has them
        return getattr(self._loader, name)


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Finds only the modules named in _QUIET_IMPORTS (as the normal path finder would) and wraps their
    loader; for every other name it returns None, so the import system goes on as usual."""

    def find_spec(self, name, path=None, target=None):
        context = _QUIET_IMPORTS.get(name)
        if context is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, context)
        return spec


def _drop_default_config_notes(record: logging.LogRecord) -> bool:
    # The qwen-tts config classes log "talker_config is None. Initializing talker model with default
    # values" (and the same for their other sub-configs) at INFO each time one is built without that
    # sub-config, which transformers does dozens of times while loading (default instances to compare
    # against). The real sub-configs come from the checkpoint's config.json right after.
    return "is None. Initializing" not in record.getMessage()


def _quiet_library_noise() -> None:
    if not any(isinstance(finder, _QuietImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImportFinder())
    # Filters on the loggers the records are created on (a filter on a parent logger is not consulted for
    # records of its children); transformers' get_logger returns these same logging.getLogger objects.
    for name in (
        "qwen_tts.core.models.configuration_qwen3_tts",
        "qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2",
        "qwen_tts.core.tokenizer_25hz.configuration_qwen3_tts_tokenizer_v1",
    ):
        logging.getLogger(name).addFilter(_drop_default_config_notes)
    # With NO_SOX set, the sox package logs a 10-line "SoX could not be found!" warning; we never use SoX.
    # (A level would not do: sox sets its logger's level on import; filters stay.)
    logging.getLogger("sox").addFilter(lambda record: record.levelno >= logging.ERROR)


_quiet_library_noise()
