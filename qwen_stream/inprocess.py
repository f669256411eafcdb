"""The server without HTTP, for the command line and the serverless worker: the same Server (models, speech,
voices, jobs) on an asyncio loop in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .config import ServerSettings
from .speech.startup import Server

T = TypeVar("T")


class InProcessServer:
    """The server's services without HTTP: loaded once, on an event loop of their own thread. `run` takes a
    coroutine from any other thread and returns its result."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.server = Server(settings)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="qwen-stream-inprocess", daemon=True).start()
        self.run(self.server.start())
        if self.server.state != "ready":
            raise RuntimeError(f"the models did not load: {self.server.error}")

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        self.run(self.server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
