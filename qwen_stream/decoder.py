"""Sliding-window decoding of codec frames into PCM16 bytes, with no seams.

The 12 Hz decoder is strictly causal, so the samples of frame t depend only on frames <= t. Decoding
`context + new` frames and keeping the last `new * 1920` samples therefore reproduces the full decode up
to the context's truncation error (DESIGN.md section 3): no fades, no crossfades, nothing overlapped.

Chunk schedule: the first chunk holds `first_chunk_size` frames (the lowest time to first audio); each
later chunk doubles, up to `chunk_size`. Doubling keeps playback gapless whenever generation runs at least
twice real time, while spending only a few extra window decodes at the start; when it runs slower, the
continuous loop takes the pending frames as a chunk ahead of the schedule (`take_pending`, playback.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .carried_decode import CarriedDecoder, DecoderState
from .settings import SAMPLES_PER_FRAME, StreamingSettings

# (codes (T, 16), frames wanted n) -> waveform whose last n * 1920 samples belong to the last n frames
DecodeFn = Callable[[torch.Tensor, int], torch.Tensor]
# (codes (B, T, 16), frames wanted n) -> waveforms (B, samples), the same for every row
BatchDecodeFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class Carry:
    """One utterance's carried decoder state (carried_decode.py), replaced after each chunk it decodes."""

    decoder: CarriedDecoder
    state: DecoderState


@dataclass(frozen=True)
class Window:
    """A chunk that is due: the frames to decode (its left context, then `new` frames) of one utterance. With
    `carry`, the frames continue the carried state: the chunk's own frames (after an ICL reference's context
    on the first chunk)."""

    codes: torch.Tensor  # (T, 16)
    new: int
    carry: Carry | None = None

    def pcm(self, wav: torch.Tensor) -> bytes:
        """The chunk's PCM from the decode of this window."""
        return to_pcm16(wav[-self.new * SAMPLES_PER_FRAME :])


def decode_windows(decode: BatchDecodeFn, windows: Sequence[Window]) -> list[torch.Tensor]:
    """Every due window of a step in as few decoder calls as shapes allow: windows of the same length and chunk
    are one batch (after the first second of speech every row's window is context + chunk_size, so one call
    serves the whole batch). Waveforms come back in the windows' order."""
    groups: dict[tuple[int, int, int | None], list[int]] = {}
    for index, window in enumerate(windows):
        carried = None if window.carry is None else id(window.carry.decoder)
        groups.setdefault((len(window.codes), window.new, carried), []).append(index)
    out: list[torch.Tensor | None] = [None] * len(windows)
    advanced: list[tuple[Carry, DecoderState]] = []
    for (_, new, carried), members in groups.items():
        codes = torch.stack([windows[i].codes for i in members])
        if carried is None:
            wavs = decode(codes, new)
        else:
            carries = [carry for carry in (windows[i].carry for i in members) if carry is not None]
            # Frames before the new ones are an ICL reference's codes priming a fresh state: only their last
            # few go through the sample-rate stack, as in the window decode.
            wavs, states = carries[0].decoder.decode(codes, [carry.state for carry in carries], keep=new)
            advanced.extend(zip(carries, states, strict=True))
        for i, wav in zip(members, wavs, strict=True):
            out[i] = wav
    for carry, state in advanced:  # only once every group has decoded: a failed call is retried from the same states
        carry.state = state
    return [wav for wav in out if wav is not None]


def to_pcm16(wav: torch.Tensor) -> bytes:
    """Float waveform in [-1, 1] -> little-endian signed 16-bit bytes."""
    samples = (wav.detach().float().clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).cpu().numpy()
    return samples.astype("<i2", copy=False).tobytes()


def chunk_schedule(settings: StreamingSettings):
    """Yields chunk sizes: first_chunk_size, then doubling, capped at chunk_size."""
    size = settings.first_chunk_size
    while True:
        yield size
        size = min(settings.chunk_size, size * 2)


class StreamingDecoder:
    """Collects frames of one utterance and turns them into PCM as soon as a chunk is complete."""

    def __init__(
        self,
        decode: DecodeFn,
        settings: StreamingSettings,
        context_codes: torch.Tensor | None = None,
        carried: CarriedDecoder | None = None,
    ):
        """`carried`: decode with the decoder's state carried between chunks (settings.decode "carried"; with
        None, or "window", each chunk decodes `left_context` frames of context again)."""
        self._decode = decode
        self._carry = None if carried is None or settings.decode != "carried" else Carry(carried, DecoderState())
        self._left_context = settings.left_context  # the window decode's; a carried state needs none
        self._schedule = chunk_schedule(settings)
        self._target = next(self._schedule)
        # Frames already spoken (an ICL reference's codes, then our own), kept only as far as the context reaches.
        # Carried, only the reference's codes, which the first chunk decodes in front of its own frames to prime
        # the state (as far back as attention reaches).
        primed = self._left_context if self._carry is None else self._carry.decoder.window
        self._history: list[torch.Tensor] = []
        if context_codes is not None and primed > 0 and len(context_codes) > 0:
            self._history = list(context_codes[-primed:])
        self._pending = 0

    def push(self, frame: torch.Tensor) -> bytes | None:
        """Adds one frame (16 codes); returns PCM bytes when it completes a chunk."""
        window = self.take(frame)
        return None if window is None else window.pcm(self.decode(window))

    def flush(self) -> bytes | None:
        """PCM for the frames not yet emitted (end of the utterance)."""
        window = self.take_tail()
        return None if window is None else window.pcm(self.decode(window))

    def decode(self, window: Window) -> torch.Tensor:
        """One window alone, with this utterance's decoder (batched decoding: `decode_windows`)."""
        if window.carry is not None:
            return decode_windows(_unbatched(self._decode), [window])[0]
        return self._decode(window.codes, window.new)

    @property
    def frames_due(self) -> int:
        """Frames still to come before the next chunk is complete."""
        return self._target - self._pending

    def take(self, frame: torch.Tensor) -> Window | None:
        """Adds one frame; returns the window to decode when it completes a chunk (the caller decodes it, maybe
        batched with other utterances' windows, and turns it into PCM with `Window.pcm`)."""
        self._history.append(frame)
        self._pending += 1
        if self._pending >= self._target:
            self._target = next(self._schedule)
            return self._window()
        return None

    def take_tail(self) -> Window | None:
        """The window of the frames not yet emitted (end of the utterance), if any."""
        return self.take_pending()

    def take_pending(self) -> Window | None:
        """The window of the frames not yet emitted, if any, as a chunk now: a tail, or a chunk ahead of the
        schedule (which goes on from where it was)."""
        return self._window() if self._pending else None

    def _window(self) -> Window:
        new = self._pending
        if self._carry is not None:  # the pending frames, after an ICL reference's codes on the first chunk
            window = Window(torch.stack(self._history), new, self._carry)
            self._pending = 0
            self._history = []
            return window
        context = min(self._left_context, len(self._history) - new)
        window = Window(torch.stack(self._history[len(self._history) - new - context :]), new)
        self._pending = 0
        if len(self._history) > self._left_context:
            del self._history[: len(self._history) - self._left_context]
        return window


def _unbatched(decode: DecodeFn) -> BatchDecodeFn:
    return lambda codes, new: torch.stack([decode(row, new) for row in codes])


def pcm16_to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
