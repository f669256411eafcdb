"""Raw sample streams for socket and telephony clients: PCM16 at 24 kHz in, any of the raw encodings and
rates those clients ask for out, chunk by chunk with no seams.

Resampling keeps its state across chunks (soxr's streaming resampler), so a chunk border is not a
discontinuity. G.711 (mu-law, A-law) is encoded here with the ITU segment tables, as the reference C code
(Sun's g711.c, which CPython's audioop also used) does; tests compare every one of the 65,536 inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from .catalog import SAMPLE_RATE

ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw")
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(frozen=True)
class RawFormat:
    encoding: str = "pcm_s16le"
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {self.encoding!r}")
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, not {self.sample_rate}")

    @property
    def bytes_per_sample(self) -> int:
        return {"pcm_s16le": 2, "pcm_f32le": 4}.get(self.encoding, 1)


class RawConverter:
    """PCM16 LE mono at 24 kHz -> the format's bytes. `push` per chunk, `finish` once at the end."""

    def __init__(self, fmt: RawFormat):
        self.format = fmt
        self._resampler = (
            None
            if fmt.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(SAMPLE_RATE, fmt.sample_rate, 1, dtype="float32", quality="HQ")
        )

    def push(self, pcm16: bytes) -> bytes:
        return self._convert(pcm16, last=False)

    def finish(self) -> bytes:
        """The resampler's delayed tail (nothing at 24 kHz)."""
        return self._convert(b"", last=True) if self._resampler is not None else b""

    def _convert(self, pcm16: bytes, last: bool) -> bytes:
        if self._resampler is None and self.format.encoding == "pcm_s16le":
            return pcm16
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return encode(samples, self.format.encoding)


def encode(samples: np.ndarray, encoding: str) -> bytes:
    """Float samples in [-1, 1) -> bytes of the encoding."""
    if encoding == "pcm_f32le":
        return np.clip(samples, -1.0, 1.0).astype("<f4").tobytes()
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    if encoding == "pcm_mulaw":
        return linear_to_mulaw(pcm).tobytes()
    return linear_to_alaw(pcm).tobytes()


def _segment(values: np.ndarray, ends: tuple[int, ...]) -> np.ndarray:
    """The G.711 segment of each value: the index of the first segment end >= it (8 when beyond all)."""
    return np.searchsorted(np.asarray(ends), values, side="left")


_MULAW_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linear_to_mulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 -> G.711 mu-law bytes (uint8)."""
    value = pcm.astype(np.int32) >> 2  # 14-bit magnitude scale
    negative = value < 0
    value = np.minimum(np.where(negative, -value, value), 8159) + 33  # clip, then the bias (0x84 >> 2)
    mask = np.where(negative, 0x7F, 0xFF)
    segment = _segment(value, _MULAW_ENDS)
    mantissa = (value >> np.minimum(segment + 1, 15)) & 0xF
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def linear_to_alaw(pcm: np.ndarray) -> np.ndarray:
    """int16 -> G.711 A-law bytes (uint8)."""
    value = pcm.astype(np.int32) >> 3  # 13-bit scale
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    value = np.where(negative, -value - 1, value)
    segment = _segment(value, _ALAW_ENDS)
    shift = np.where(segment < 2, 1, segment)
    mantissa = (value >> np.minimum(shift, 15)) & 0xF
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)
