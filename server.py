"""qwen-stream server: CLI flags and environment -> settings -> app -> uvicorn."""

from __future__ import annotations

import logging
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    from qwen_stream.config import load_settings

    try:
        settings = load_settings(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from qwen_stream.model import ModelLoadError, check_model_source

    try:
        if settings.model_path:
            check_model_source(settings.model_path)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import uvicorn

    from qwen_stream.app import create_app

    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level.lower(), timeout_graceful_shutdown=settings.shutdown_timeout)
    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown), then restores the previous handlers and
    # raises the signal again. No-op handlers make that last step harmless: a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
