"""Voices: reference audio -> clone prompts. Audio is always decoded here and handed to qwen-tts as
(samples, rate): a string given to the library would be fetched as a URL or read as a local path."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re

import numpy as np
import soundfile as sf

from .model import LoadedModel
from .settings import SAMPLE_RATE

MIN_REFERENCE_SECONDS = 1.0
MAX_REFERENCE_SECONDS = 30.0


class VoiceError(ValueError):
    """Reference audio that cannot make a voice (unreadable, too short, silent...)."""


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Audio file bytes (wav, flac, ogg, mp3 where libsndfile supports it) -> mono float32, rate."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise VoiceError(f"not a readable audio file ({e})") from e
    return samples.mean(axis=1).astype(np.float32), int(rate)


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


_LOOKS_LIKE_LOCATION = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://|file:|~|\.{0,2}/|[A-Za-z]:\\)|\.(?:wav|mp3|flac|ogg|m4a|opus)$",
                                  re.IGNORECASE)


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
        raise VoiceError(f"ref_audio must be base64-encoded audio ({what} given); paths and URLs are refused "
                         "and never opened") from e


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
    items = model.tts.create_voice_clone_prompt(ref_audio=(samples, rate), ref_text=text,
                                                x_vector_only_mode=not text)
    return items[0]
