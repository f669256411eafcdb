"""The server's view of a reader's playback, so that the engine can keep a started stream from running dry.

The server never sees the client's player, so it assumes the least forgiving one: playing starts when the first
chunk goes out, every chunk plays right after the one before at real time, and a chunk that comes after the
audio ran out starts playing when it comes. Any player with a start buffer has more left than this, so the
estimate of the audio left errs on the safe side. It counts frames at 80 ms each: a stream whose `speed` is
changed after the engine plays longer or shorter than that.

The chunk schedule (decoder.py) starts with one frame (80 ms) and doubles, which keeps playback whole only while
a row's frames come at least twice as fast as real time. Under load they may not: a step and its decode stage
for many rows can take 40 ms a frame on a busy CPU, and the second chunk (two frames) then comes after the first
chunk's 80 ms have played. The continuous loop therefore asks after each step whether a row's reader would run
out before its scheduled chunk is complete (`runs_dry`), and if so sends the frames it has now (`--early-chunks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .catalog import FRAME_SECONDS

if TYPE_CHECKING:
    from .continuous import Load


class Playback:
    """When a stream's audio, as sent so far, would end playing. Shared by the jobs of one stream (its
    sentences), so a later sentence counts the audio of the sentences before it. Written by the thread that
    hands chunks out, read by the engine thread: each write is one float."""

    def __init__(self) -> None:
        self._end: float | None = None  # perf_counter time at which the audio sent so far has played

    def sent(self, seconds: float, now: float) -> None:
        """A chunk of `seconds` of audio went out at `now`."""
        end = self._end
        self._end = (now if end is None or end < now else end) + seconds

    def left(self, now: float) -> float | None:
        """Seconds of audio the reader still has to play at `now` (negative: it ran out that long ago and waits
        for the next chunk); None before the first chunk."""
        return None if self._end is None else self._end - now


def runs_dry(left: float | None, frames_due: int, load: Load) -> bool:
    """Whether a reader with `left` seconds of audio (Playback.left; None: nothing sent yet) could run out before
    the chunk that lacks `frames_due` frames is out: a mean step period (the step, the decode stage beside or
    after it, the prefills between) per frame, one period more for the step that comes out long (a prefill of
    joining rows, a family's first batch), then the decode stage at its mean. A stream that has sent nothing
    has no playback to keep whole: its first chunk is already as early as the schedule makes it. Nor is a step
    period of a frame's length or more: then no chunk size keeps any stream whole, and the more decode calls
    of smaller chunks would only slow every row further."""
    if left is None or load.period_s >= FRAME_SECONDS:
        return False
    return left < (frames_due + 1) * load.period_s + load.decode_s
