"""What speech work hands out, at both levels (one engine job, one client utterance): audio chunks, then
exactly one End. One outcome vocabulary and one stats type serve both levels; no torch, no HTTP."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .catalog import BYTES_PER_FRAME, FRAME_SECONDS, SAMPLE_RATE

if TYPE_CHECKING:
    import torch


class Outcome(str, enum.Enum):
    """How a job or an utterance ended. A str: logs, metrics labels and JSON show the plain word."""

    DONE = "done"  # the model said EOS (a job), or every sentence was spoken (an utterance)
    CAPPED = "capped"  # a job reached its frame budget (its utterance still counts as done)
    CANCELLED = "cancelled"  # a job stopped by its owner (the engine closing, an interrupt, a departed reader)
    STALLED = "stalled"  # the reader took nothing for --send-timeout seconds
    ERROR = "error"
    INTERRUPTED = "interrupted"  # the client barged in (POST /tts/interrupt)
    DISCONNECTED = "disconnected"  # the reader went away
    SHUTDOWN = "shutdown"
    EXPIRED = "expired"  # a queue place reserved at arrival was never filled
    REJECTED = "rejected"  # refused while being prepared (bad input): its queue place is given back

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AudioChunk:
    """PCM16 little-endian mono audio, with its format stated."""

    pcm: bytes
    frames: int
    index: int
    sample_rate: int = SAMPLE_RATE
    sample_width: int = 2
    channels: int = 1

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (self.sample_rate * self.sample_width * self.channels)

    @staticmethod
    def frames_in(pcm: bytes) -> int:
        return len(pcm) // BYTES_PER_FRAME


@dataclass
class Stats:
    """Counts and times (perf_counter seconds) of one job, or of one utterance: the sum of its jobs."""

    submitted: float = field(default_factory=time.perf_counter)  # an utterance: when its request arrived
    started: float | None = None
    joined: float | None = None  # continuous engine: prefilled and in the running batch
    first_frame: float | None = None  # its first frame came out of a step
    first_chunk: float | None = None  # engine side: the first chunk was made (decoded, handed out)
    first_audio: float | None = None  # client side: the first byte was handed to the response
    finished: float | None = None
    frames: int = 0
    chunks: int = 0
    decode_seconds: float = 0.0
    compute_seconds: float = 0.0  # a job: started -> finished; an utterance: its jobs' summed
    engine_ttfb: float | None = None  # the engine's time to first chunk (an utterance: its first job's)
    eos: bool = False  # the last job ended by EOS, not by its cap or a stop

    @property
    def audio_seconds(self) -> float:
        return self.frames * FRAME_SECONDS

    @property
    def queue_seconds(self) -> float | None:
        return None if self.started is None else self.started - self.submitted

    @property
    def ttfb(self) -> float | None:
        """Client-side time to first audio: from arrival to the first byte handed out."""
        return None if self.first_audio is None else self.first_audio - self.submitted

    @property
    def rtf(self) -> float | None:
        """Real-time factor: compute time / audio time (below 1 is faster than real time)."""
        return self.compute_seconds / self.audio_seconds if self.frames else None

    def absorb(self, job: Stats) -> None:
        """Adds one finished job's compute to this utterance (its frames are counted as they are delivered)."""
        self.compute_seconds += job.compute_seconds
        self.decode_seconds += job.decode_seconds
        if self.engine_ttfb is None:
            self.engine_ttfb = job.engine_ttfb


@dataclass(frozen=True)
class Mark:
    """A point in an utterance's audio that its owner asked to hear about: it arrives after the audio of every
    sentence given before it and before any audio of the sentences after it (a flush acknowledged, a spoken unit's
    end). `value` is the owner's own."""

    value: object


@dataclass(frozen=True)
class End:
    """The last event of a job or an utterance."""

    outcome: Outcome
    stats: Stats
    error: BaseException | None = None  # with Outcome.ERROR
    codes: torch.Tensor | None = None  # a job's (frames, 16) codes, when it was asked to keep them


Event = AudioChunk | End  # what a job hands out; an utterance may add Marks
