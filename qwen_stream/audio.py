"""Audio formats: PCM16 chunks in, encoded bytes out, as the encoder emits them; and time-stretching.

Every stage takes bytes of PCM16 little-endian mono 24 kHz and returns what it can give now, so a stream
stays a stream: `push(pcm) -> bytes` (possibly empty), `finish() -> bytes` (the tail), `close()`.
Chained: PCM -> TimeStretch (speed != 1) -> encoder. `encode_stream` runs the chain over an async
iterator of PCM, off the event loop.

All real codecs and the time-stretch come from FFmpeg through PyAV (its wheels bundle libmp3lame,
libopus and FFmpeg's own aac and flac encoders, and the atempo filter). WAV and PCM are written here.
Nothing here knows HTTP.

One format cannot stream: FLAC (`AudioFormat.whole_file`). It is still encoded chunk by chunk, but into a
seekable file in memory that goes out whole from `finish()`; see FORMATS for why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import struct
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import cast

import numpy as np

from .raw_audio import RawConverter, RawFormat
from .settings import SAMPLE_RATE

MIN_SPEED = 0.25
MAX_SPEED = 4.0
# atempo takes 0.5..100 per instance; slower speeds chain several. Input is fed in 10 ms pieces: atempo
# emits output in blocks sized by its input, so small pieces keep its added latency near its ~40 ms window.
_ATEMPO_MIN = 0.5
_STRETCH_PIECE = SAMPLE_RATE // 100
_UNKNOWN_SIZE = 0xFFFFFFFF  # RIFF/data sizes of a WAV whose length is not known when the header is sent


class AudioError(RuntimeError):
    """An encoder or filter failed (a bug or a broken library, never bad input)."""


@dataclass(frozen=True)
class AudioFormat:
    """One response format: its content type and, for real codecs, the FFmpeg muxer and encoder."""

    name: str
    media_type: str
    muxer: str | None = None  # None: written here (pcm, wav)
    codec: str | None = None
    bit_rate: int | None = None
    muxer_options: dict[str, str] = field(default_factory=dict)
    # Samples a decoder may put before the audio (encoder delay it cannot remove from this stream) and
    # after it (padding to a whole codec frame). Documented per codec; tests allow for them.
    priming: int = 0
    frame_samples: int = 0
    # True: the header holds what only the end knows, so the muxer gets a seekable file to go back and
    # fill it in, and the encoded file leaves whole at finish() instead of chunk by chunk.
    whole_file: bool = False
    # The raw telephony encodings (G.711) are written here at this rate; the others are 24 kHz.
    sample_rate: int = SAMPLE_RATE

    def encoder(self) -> Encoder:
        if self.name == "pcm":
            return PcmEncoder()
        if self.name == "wav":
            return WavEncoder()
        if self.name in G711:
            return G711Encoder(G711[self.name], self.sample_rate)
        return AVEncoder(self)

    def at(self, sample_rate: int | None) -> AudioFormat:
        """This format at another rate (G.711 only: the codecs and PCM formats are 24 kHz)."""
        if sample_rate is None or sample_rate == self.sample_rate:
            return self
        if self.name not in G711:
            raise ValueError(f"sample_rate applies to mulaw and alaw only; {self.name} is {SAMPLE_RATE} Hz")
        RawFormat(G711[self.name], sample_rate)  # raises ValueError for a rate it does not offer
        return dataclasses.replace(self, sample_rate=sample_rate)


FORMATS: dict[str, AudioFormat] = {
    # MPEG-2 Layer III at 24 kHz (576-sample frames). No ID3 tag, no Xing frame (it could not be filled in
    # on a stream): plain frames that can be cut and concatenated. LAME's delay (576 + 529 samples) stays in.
    "mp3": AudioFormat(
        "mp3",
        "audio/mpeg",
        "mp3",
        "libmp3lame",
        64_000,
        {"id3v2_version": "0", "write_xing": "0"},
        priming=1105,
        frame_samples=576,
    ),
    # Ogg Opus (RFC 7845), 20 ms packets, one packet per Ogg page so each is sent at once (the muxer's
    # default holds pages for up to 1 s). Pre-skip and the final granule position trim decoder delay.
    "opus": AudioFormat(
        "opus", "audio/ogg", "ogg", "libopus", 32_000, {"page_duration": "20000"}, priming=0, frame_samples=480
    ),
    # AAC-LC in ADTS (a raw .aac stream). ADTS cannot signal the encoder's 1024-sample priming.
    "aac": AudioFormat("aac", "audio/aac", "adts", "aac", 64_000, priming=1024, frame_samples=1024),
    # FLAC, sent whole at the end. Streamed, its STREAMINFO (the first metadata block, before any audio)
    # says total samples 0 = "unknown", which the FLAC spec allows but libsndfile turns into
    # SF_COUNT_MAX frames (2**63-1: "1e11 hours"; soundfile.read() then fails). Only the end knows the
    # count, so the muxer writes into memory and, at the trailer, rewrites STREAMINFO with the total,
    # the real min/max frame sizes and the MD5 of the audio. No padding: the last block is just shorter.
    "flac": AudioFormat(
        "flac", "audio/flac", "flac", "flac", muxer_options={"metadata_header_padding": "0"}, whole_file=True
    ),
    "wav": AudioFormat("wav", "audio/wav"),
    "pcm": AudioFormat("pcm", "audio/pcm"),
    # G.711 for telephony, 8 kHz unless asked otherwise; raw bytes, no header (RFC 2046's audio/basic is
    # 8 kHz mu-law; A-law has no registered type beyond this common one).
    "mulaw": AudioFormat("mulaw", "audio/basic", sample_rate=8000),
    "alaw": AudioFormat("alaw", "audio/x-alaw-basic", sample_rate=8000),
}
G711 = {"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


class Encoder:
    """PCM16 bytes in, encoded bytes out as they become available."""

    offload = False  # True: push/finish cost enough CPU to run off the event loop

    def push(self, pcm: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _WholeSamples:
    """Chunks may end in the middle of a sample: keep the odd byte for the next one."""

    def __init__(self) -> None:
        self._odd = b""

    def take(self, pcm: bytes) -> bytes:
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) % 2:
            pcm, self._odd = pcm[:-1], pcm[-1:]
        return pcm


class G711Encoder(Encoder):
    """PCM16 at 24 kHz -> G.711 bytes at the format's rate, resampled statefully across chunks."""

    def __init__(self, encoding: str, sample_rate: int):
        self._samples = _WholeSamples()
        self._raw = RawConverter(RawFormat(encoding, sample_rate))

    def push(self, pcm: bytes) -> bytes:
        return self._raw.push(self._samples.take(pcm))

    def finish(self) -> bytes:
        return self._raw.finish()


class PcmEncoder(Encoder):
    def __init__(self) -> None:
        self._samples = _WholeSamples()

    def push(self, pcm: bytes) -> bytes:
        return self._samples.take(pcm)


def wav_header(sample_rate: int = SAMPLE_RATE, channels: int = 1, sample_width: int = 2) -> bytes:
    """A RIFF/WAVE PCM header with 0xFFFFFFFF sizes: the length is unknown when streaming starts."""
    byte_rate = sample_rate * channels * sample_width
    return (
        b"RIFF"
        + struct.pack("<I", _UNKNOWN_SIZE)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, byte_rate, channels * sample_width, 8 * sample_width)
        + b"data"
        + struct.pack("<I", _UNKNOWN_SIZE)
    )


class WavEncoder(PcmEncoder):
    """The header goes out with the first audio (or alone at the end of an utterance that had none)."""

    def __init__(self) -> None:
        super().__init__()
        self._header: bytes | None = wav_header()

    def push(self, pcm: bytes) -> bytes:
        data = super().push(pcm)
        if data and self._header is not None:
            data, self._header = self._header + data, None
        return data

    def finish(self) -> bytes:
        header, self._header = self._header, None
        return header or b""


class _Sink:
    """A write-only, non-seekable file for PyAV: muxers then write a streamable file and never seek back."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data

    def tail(self) -> bytes:
        return self.take()


class _WholeFile(io.BytesIO):
    """A seekable file in memory: PyAV sees seek() and lets the muxer go back to rewrite its header at
    the trailer, so no byte may leave before then."""

    def take(self) -> bytes:
        return b""

    def tail(self) -> bytes:
        return self.getvalue()


def _frame(samples: np.ndarray, pts: int):
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.time_base = Fraction(1, SAMPLE_RATE)
    frame.pts = pts
    return frame


class AVEncoder(Encoder):
    """An FFmpeg encoder and muxer writing into memory. PyAV cuts the PCM into the codec's frame size and
    converts the sample format; each push returns the bytes the muxer wrote for the packets it got (for a
    whole_file format nothing: finish() returns the file).

    push/finish may run on a worker thread while close() runs on the event loop (a reader left): a lock
    keeps FFmpeg's state from being freed under a running call."""

    offload = True

    def __init__(self, fmt: AudioFormat):
        import av

        self.format = fmt
        self._lock = threading.Lock()
        self._samples = _WholeSamples()
        self._sink = _WholeFile() if fmt.whole_file else _Sink()
        self._pts = 0
        self._done = False
        try:
            self._container = av.open(
                self._sink, "w", format=fmt.muxer, options={"flush_packets": "1", **fmt.muxer_options}
            )
            # AVEncoder serves only formats with an FFmpeg codec, and those codecs are audio codecs.
            stream = self._container.add_stream(cast(str, fmt.codec), rate=SAMPLE_RATE, layout="mono")
            self._stream = cast("av.AudioStream", stream)
            if fmt.bit_rate:
                self._stream.bit_rate = fmt.bit_rate
            self._stream.codec_context.open()
        except av.FFmpegError as e:
            raise AudioError(f"cannot start the {fmt.name} encoder: {e}") from e

    def push(self, pcm: bytes) -> bytes:
        data = self._samples.take(pcm)
        if not data:
            return b""
        samples = np.frombuffer(data, dtype="<i2")
        with self._lock:
            self._check_open()
            self._encode(_frame(samples, self._pts))
            self._pts += len(samples)
            return self._sink.take()

    def finish(self) -> bytes:
        with self._lock:
            self._check_open()
            self._encode(None)
            self._container.close()
            self._done = True
            return self._sink.tail()

    def close(self) -> None:
        with self._lock:
            if not self._done:
                self._done = True
                with contextlib.suppress(Exception):  # a stream abandoned midway: nothing left to save
                    self._container.close()

    def _encode(self, frame) -> None:
        import av

        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as e:
            raise AudioError(f"{self.format.name} encoding failed: {e}") from e

    def _check_open(self) -> None:
        if self._done:
            raise AudioError(f"the {self.format.name} encoder is closed")


class TimeStretch:
    """Changes tempo without changing pitch: FFmpeg's atempo filter (overlap-add of waveform-similar
    fragments, like WSOLA), streamed. `speed` 2.0 makes audio half as long. Output trails input by about
    atempo's 40 ms window; `finish()` drains it."""

    offload = True

    def __init__(self, speed: float):
        import av
        import av.filter

        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        self.speed = speed
        self._lock = threading.Lock()
        self._samples = _WholeSamples()
        self._pts = 0
        self._done = False
        self._graph = av.filter.Graph()
        node = self._graph.add_abuffer(
            format="s16", sample_rate=SAMPLE_RATE, layout="mono", time_base=Fraction(1, SAMPLE_RATE)
        )
        for tempo in atempo_chain(speed):
            following = self._graph.add("atempo", f"{tempo:.6f}")
            node.link_to(following)
            node = following
        sink = self._graph.add("abuffersink")
        node.link_to(sink)
        self._graph.configure()

    def push(self, pcm: bytes) -> bytes:
        data = self._samples.take(pcm)
        if not data:
            return b""
        samples = np.frombuffer(data, dtype="<i2")
        out = []
        with self._lock:
            if self._done:
                raise AudioError("the time-stretch stage is closed")
            for start in range(0, len(samples), _STRETCH_PIECE):
                piece = samples[start : start + _STRETCH_PIECE]
                self._graph.push(_frame(piece, self._pts))
                self._pts += len(piece)
                out.append(self._pull())
        return b"".join(out)

    def finish(self) -> bytes:
        with self._lock:
            if self._done:
                raise AudioError("the time-stretch stage is closed")
            self._graph.push(None)
            tail = self._pull()
            self._done = True
            return tail

    def close(self) -> None:
        with self._lock:
            self._done = True

    def _pull(self) -> bytes:
        import av

        out = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().astype("<i2", copy=False).tobytes())
        return b"".join(out)


def atempo_chain(speed: float) -> list[float]:
    """atempo factors whose product is `speed`, each within atempo's 0.5..100."""
    factors = []
    while speed < _ATEMPO_MIN:
        factors.append(_ATEMPO_MIN)
        speed /= _ATEMPO_MIN
    factors.append(speed)
    return factors


class AudioPipeline:
    """PCM -> optional time-stretch -> encoder. Built before the first byte so that a format the machine
    cannot encode fails as an error response, not as a broken stream. Counts the PCM it was given."""

    def __init__(self, fmt: AudioFormat, speed: float = 1.0):
        self.format = fmt
        self.stretch = TimeStretch(speed) if speed != 1.0 else None
        try:
            self.encoder = fmt.encoder()
        except BaseException:
            if self.stretch is not None:
                self.stretch.close()
            raise
        self.pcm_bytes = 0
        self.offload = self.encoder.offload or self.stretch is not None

    def push(self, pcm: bytes) -> bytes:
        self.pcm_bytes += len(pcm)
        if self.stretch is not None:
            pcm = self.stretch.push(pcm)
            if not pcm:
                return b""
        return self.encoder.push(pcm)

    def finish(self) -> bytes:
        head = b""
        if self.stretch is not None:
            tail = self.stretch.finish()
            head = self.encoder.push(tail) if tail else b""
        return head + self.encoder.finish()

    def close(self) -> None:
        if self.stretch is not None:
            self.stretch.close()
        self.encoder.close()


async def encode_stream(pipeline: AudioPipeline, pcm: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Encoded bytes as the pipeline emits them. Encoding runs on a worker thread (a few ms per chunk for
    the real codecs) so the event loop keeps serving other streams. The PCM iterator is always closed,
    even when this generator is abandoned midway, so its cleanup (cancelling generation) runs at once."""

    async def run(step, *args):
        return await asyncio.to_thread(step, *args) if pipeline.offload else step(*args)

    try:
        async with contextlib.aclosing(pcm):
            async for chunk in pcm:
                data = await run(pipeline.push, chunk)
                if data:
                    yield data
        tail = await run(pipeline.finish)
        if tail:
            yield tail
    finally:
        pipeline.close()
