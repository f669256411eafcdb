"""Where the continuous loop's decode stage runs: on a thread of its own, so the next talker step runs while this
step's windows decode (on CUDA, on a stream of its own too), or inline.

Work runs strictly in the order it was handed in: a row's chunks, then its end. The loop keeps at most one
step of decoding in flight behind the step it is running (`wait_for_room`), so a chunk leaves at most one
step after the frame that completed it, and memory held by waiting windows stays bounded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


class DecodeStage:
    def __init__(self, overlap: bool):
        self.overlap = overlap
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._unfinished = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._streams: dict[torch.device, Any] = {}
        if overlap:
            self._thread = threading.Thread(target=self._run, name="qwen-stream-decode", daemon=True)
            self._thread.start()

    def submit(self, work: Callable[[], None], device: torch.device | None = None) -> None:
        """Runs `work` after everything handed in before it (inline when there is no thread). On a CUDA
        `device` it runs on a stream of its own, after what the loop's stream has queued so far."""
        if self._thread is None:
            _guarded(work)
            return
        if device is not None and device.type == "cuda":
            stream = self._streams.get(device)
            if stream is None:
                stream = self._streams[device] = torch.cuda.Stream(device=device)
            made = torch.cuda.Event()
            made.record(torch.cuda.current_stream(device))  # the loop's stream on that device (--device cuda:N)
            inner = work

            def work() -> None:
                stream.wait_event(made)
                with torch.cuda.stream(stream):
                    inner()

        with self._changed:
            self._unfinished += 1
        self._queue.put(work)

    def wait_for_room(self, behind: int = 1) -> None:
        """Blocks until at most `behind` pieces of work are unfinished: the loop calls it before a step, so the
        decode of step k overlaps step k + 1 but has ended before step k + 2 starts."""
        with self._changed:
            self._changed.wait_for(lambda: self._unfinished <= behind)

    def drain(self) -> None:
        self.wait_for_room(0)

    def close(self) -> None:
        """Runs what was handed in, then stops the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        with torch.inference_mode():
            while (work := self._queue.get()) is not None:
                _guarded(work)
                with self._changed:
                    self._unfinished -= 1
                    self._changed.notify_all()


def _guarded(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # every piece of work handles its rows' failures; this only keeps the stage alive
        log.exception("decode stage work failed")
