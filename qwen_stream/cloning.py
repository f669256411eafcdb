"""Voices: reference audio -> clone prompts. Audio is always decoded here and handed to qwen-tts as
(samples, rate): a string given to the library would be fetched as a URL or read as a local path."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from .settings import SAMPLE_RATE

if TYPE_CHECKING:  # only an annotation: importing the model module would pull in torch
    from .model import LoadedModel

MIN_REFERENCE_SECONDS = 1.0
MAX_REFERENCE_SECONDS = 30.0
# Bounds on what a header may claim. At most MAX_REFERENCE_SECONDS of every channel is decoded (float32),
# so these cap it at 176 MiB (a few MiB for the usual mono or stereo at 16-48 kHz); real references fit.
# Bounds on what one reference may cost to decode: 30 s of stereo at 96 kHz is 22 MiB of float32.
MAX_CHANNELS = 2
MIN_RATE, MAX_RATE = 8_000, 96_000
# libsndfile's frame count when the header gives none (a streamed FLAC, a pipe).
_UNKNOWN_FRAMES = 2**63 - 1


class VoiceError(ValueError):
    """Reference audio that cannot make a voice (unreadable, too short, silent...)."""


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Audio file bytes (wav, flac, ogg, mp3, whatever libsndfile reads) -> mono float32, rate.

    A few hundred KiB of compressed silence can decode to many GiB, so the header is checked before
    anything is decoded, and decoding stops just past MAX_REFERENCE_SECONDS: memory stays within
    about that much audio at the file's rate, whatever the header claims."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_header(f.channels, f.samplerate, f.frames)
            return _decode_bounded(f), int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise VoiceError(f"not a readable audio file ({e})") from e


def _too_long(seconds: float | None = None) -> VoiceError:
    what = f"{seconds:.1f} s" if seconds is not None else f"longer than {MAX_REFERENCE_SECONDS:g} s"
    return VoiceError(f"reference audio is {what}; at most {MAX_REFERENCE_SECONDS:g} s is allowed")


def _check_header(channels: int, rate: int, frames: int) -> None:
    """Refuses what the header alone shows to be unusable, before a sample is decoded."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise VoiceError(f"reference audio has {channels} channels; at most {MAX_CHANNELS} are accepted")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise VoiceError(f"reference audio is sampled at {rate} Hz; {MIN_RATE}-{MAX_RATE} Hz is accepted")
    # An unknown length is left to the bounded decode; a known one over the limit needs no decoding.
    if frames != _UNKNOWN_FRAMES and frames > MAX_REFERENCE_SECONDS * rate:
        raise _too_long(frames / rate)


def _decode_bounded(f: sf.SoundFile) -> np.ndarray:
    """One read of at most one frame past the limit: libsndfile decodes packet by packet and stops
    there, whether the header's length was right, absent or a lie. (One read, not a loop of short
    ones: soundfile seeks to the current position after each read, and an MP3 seek re-syncs the
    decoder, which would garble the audio at every block boundary.)"""
    _skip_position_sync(f)
    limit = int(MAX_REFERENCE_SECONDS * f.samplerate)
    # A known length sizes the buffer (libsndfile zero-fills all of it), the limit caps it.
    wanted = limit if f.frames == _UNKNOWN_FRAMES else min(f.frames, limit)
    samples = f.read(wanted + 1, dtype="float32", always_2d=True)
    if len(samples) > limit:
        raise _too_long()
    return samples.mean(axis=1, dtype=np.float32)


def _skip_position_sync(f: sf.SoundFile) -> None:
    """soundfile seeks to where a read ended, to keep its position in step; in a FLAC stream of unknown
    length that seek fails at the end, and the audio read is lost with it. Only this one read follows,
    so the file is marked unseekable, the flag soundfile consults before seeking. If a soundfile
    without that flag comes, streamed FLAC is refused as unreadable, and nothing else changes."""
    try:
        f._info.seekable = 0
    except (AttributeError, TypeError):
        pass


def to_model_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resampled to the model's 24 kHz (what is stored and what the prompt is built from)."""
    if rate == SAMPLE_RATE:
        return samples.astype(np.float32)
    import soxr

    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


_LOOKS_LIKE_LOCATION = re.compile(
    r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|file:|~|\.{0,2}/|[A-Za-z]:\\)|\.(?:wav|mp3|flac|ogg|m4a|opus)$", re.IGNORECASE
)


def decode_base64_audio(text: str, max_bytes: int) -> bytes:
    """Legacy `ref_audio`: base64 audio only (a data: URL is fine). Paths and URLs are refused, never
    opened: the library would fetch or read them on the client's behalf."""
    value = text.strip()
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise VoiceError("ref_audio data URL must be base64-encoded")
    if len(value) > max_bytes * 4 // 3 + 4:
        raise VoiceError(f"ref_audio is larger than {max_bytes // 2**20} MiB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        what = "a file path or URL" if _LOOKS_LIKE_LOCATION.search(value) else "not valid base64"
        raise VoiceError(
            f"ref_audio must be base64-encoded audio ({what} given); paths and URLs are refused and never opened"
        ) from e


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_reference(samples: np.ndarray, rate: int) -> None:
    seconds = len(samples) / rate if rate else 0.0
    if seconds < MIN_REFERENCE_SECONDS:
        raise VoiceError(f"reference audio is {seconds:.2f} s; at least {MIN_REFERENCE_SECONDS:g} s is needed")
    if seconds > MAX_REFERENCE_SECONDS:
        raise VoiceError(f"reference audio is {seconds:.1f} s; at most {MAX_REFERENCE_SECONDS:g} s is allowed")
    if not np.isfinite(samples).all() or float(np.sqrt(np.mean(samples**2))) < 1e-4:
        raise VoiceError("reference audio is silent")


def clone_prompt(model: LoadedModel, samples: np.ndarray, rate: int, ref_text: str | None = None):
    """A VoiceClonePromptItem: ICL (continues the reference) with a transcript, x-vector only without."""
    if model.family != "base":
        raise VoiceError("voice cloning needs a Base model")
    check_reference(samples, rate)
    text = ref_text.strip() if ref_text else None
    items = model.tts.create_voice_clone_prompt(ref_audio=(samples, rate), ref_text=text, x_vector_only_mode=not text)
    return items[0]
