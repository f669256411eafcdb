"""Decompression bombs: a few hundred KiB of compressed silence that decodes to hours of audio. Each
bomb is read in a fresh process whose peak RSS is measured, so that one that gets through cannot take
the test run down with it; normal clips of the same formats must still read as before."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qwen_stream.cloning import MAX_REFERENCE_SECONDS, VoiceError, decode_base64_audio, read_audio

ROOT = Path(__file__).resolve().parents[2]
BOMB_MINUTES = 40
PEAK_GROWTH_LIMIT_MIB = 100
LIMIT_NAMED = f"at most {MAX_REFERENCE_SECONDS:g} s"


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


# --- Ogg: an encoded clip whose one audio page is repeated, with granule, sequence number and CRC
# rewritten. Encoding the hours of silence outright would take seconds (Opus especially).

@functools.cache
def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return tuple(table)


def ogg_crc(page: bytes) -> int:
    table, crc = _ogg_crc_table(), 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def ogg_pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27:pos + 27 + segments])
        pages.append(data[pos:end])
        pos = end
    return pages


def granule(page: bytes) -> int:
    return struct.unpack_from("<q", page, 6)[0]


def renumbered(page: bytes, flags: int, position: int, sequence: int) -> bytes:
    out = bytearray(page)
    out[5] = flags
    struct.pack_into("<q", out, 6, position)
    struct.pack_into("<II", out, 18, sequence, 0)
    struct.pack_into("<I", out, 22, ogg_crc(out))
    return bytes(out)


def stretch_ogg(clip: bytes, seconds: float, granule_rate: int, end_granule: int | None = None) -> bytes:
    """The clip's headers, then its second audio page (whole packets only) over and over. The length
    libsndfile reports is the last page's granule: end_granule makes it lie."""
    pages = ogg_pages(clip)
    first_audio = next(i for i, page in enumerate(pages) if granule(page) > 0)
    previous, page = pages[first_audio], pages[first_audio + 1]
    assert not page[5] & 1 and page[27 + page[26] - 1] < 255, "page must hold whole packets"
    step = granule(page) - granule(previous)
    copies = -(-int(seconds * granule_rate) // step)
    out, position, sequence = list(pages[:first_audio + 1]), granule(previous), first_audio
    for i in range(copies):
        position, sequence, last = position + step, sequence + 1, i == copies - 1
        if last and end_granule is not None:
            position = end_granule
        out.append(renumbered(page, 4 if last else 0, position, sequence))  # 4: end of stream
    return b"".join(out)


# --- MP3: one frame of encoded silence repeated, with no Xing/Info header to give the length.

def mp3_frames(data: bytes) -> list[bytes]:
    pos = 0
    if data[:3] == b"ID3":
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    frames = []
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] & 0xE0 == 0xE0:
        header = int.from_bytes(data[pos:pos + 4], "big")
        mpeg1 = (header >> 19) & 3 == 3
        assert (header >> 17) & 3 == 1, "layer III only"
        kbps = ([0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320] if mpeg1 else
                [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160])[(header >> 12) & 15]
        rate = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}[(header >> 19) & 3]
        size = (144 if mpeg1 else 72) * kbps * 1000 // rate[(header >> 10) & 3] + ((header >> 9) & 1)
        frames.append(data[pos:pos + size])
        pos += size
    return frames


def mp3_bomb(seconds: float, rate: int = 24_000, info_frame: bool = False) -> bytes:
    """With info_frame, the stream starts with the Info frame of a 2 s clip: a length that lies."""
    frames = mp3_frames(encode(np.zeros(2 * rate, np.float32), rate, "MP3"))
    info = [f for f in frames if b"Xing" in f or b"Info" in f]
    audio = [f for f in frames if f not in info]
    frame = min(audio[len(audio) // 4:], key=len)  # silence at the lowest bitrate
    return b"".join(info[:info_frame]) + frame * int(seconds * rate / (1152 if rate >= 32_000 else 576))


# --- WAV and AU headers written by hand, to claim what no encoder would write.

def wav(samples: bytes, rate: int = 16_000, channels: int = 1, bits: int = 16, data_size: int | None = None) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    size = len(samples) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + samples
    return b"RIFF" + struct.pack("<I", min(len(body) + size - len(samples), 0xFFFFFFFF)) + body


def au(samples: bytes, rate: int = 8_000, channels: int = 1) -> bytes:
    return b".snd" + struct.pack(">IIIII", 24, len(samples), 3, rate, channels) + samples  # 3: 16-bit PCM


def stretch_wav(clip: bytes, copies: int) -> bytes:
    """The clip's data chunk repeated (whole codec blocks), every size in the header made to match."""
    data_at = clip.index(b"data") + 8
    payload = clip[data_at:] * copies
    head = bytearray(clip[:data_at])
    struct.pack_into("<I", head, data_at - 4, len(payload))
    struct.pack_into("<I", head, 4, len(head) - 8 + len(payload))
    if (fact := head.find(b"fact")) >= 0:
        samples = struct.unpack_from("<I", head, fact + 8)[0]
        struct.pack_into("<I", head, fact + 8, samples * copies)
    return bytes(head) + payload


def flac_unknown_length(clip: bytes) -> bytes:
    """STREAMINFO's total samples set to 0, 'unknown', as a streaming encoder leaves it."""
    assert clip[:4] == b"fLaC" and clip[4] & 0x7F == 0
    out = bytearray(clip)
    out[21] &= 0xF0  # the 36-bit count: the low 4 bits of byte 21, then bytes 22-25
    out[22:26] = bytes(4)
    return bytes(out)


@functools.cache
def long_flac(seconds: float, rate: int = 8_000) -> bytes:
    return encode(np.zeros(int(seconds * rate), np.float32), rate, "FLAC", "PCM_16")


@functools.cache
def ogg_clip(subtype: str, rate: int) -> bytes:
    return encode(np.zeros(30 * rate, np.float32), rate, "OGG", subtype)


MINUTES = BOMB_MINUTES * 60
BOMBS = {
    # read whole, as before the fix, each of these raised peak RSS by 220 MiB (FLAC) to 1.3 GiB (Ogg)
    "flac": lambda: long_flac(MINUTES),
    "flac_unknown_length": lambda: flac_unknown_length(long_flac(MINUTES)),  # only the bounded decode stops it
    "ogg_vorbis": lambda: stretch_ogg(ogg_clip("VORBIS", 48_000), MINUTES, 48_000),
    "ogg_opus": lambda: stretch_ogg(ogg_clip("OPUS", 48_000), MINUTES, 48_000),
    "mp3_without_xing": lambda: mp3_bomb(MINUTES),
    "wav_gsm610": lambda: stretch_wav(encode(np.zeros(8000, np.float32), 8000, "WAV", "GSM610"), MINUTES),
    "caf_alac": lambda: encode(np.zeros(MINUTES * 8000, np.float32), 8000, "CAF", "ALAC_16"),
}
ABSURD_HEADERS = {
    "wav_1000_channels": (lambda: wav(bytes(1000 * 2 * 400), channels=1000), "at most 2 are accepted"),
    "au_a_million_channels": (lambda: au(bytes(2 * 16_000), channels=10**6), "not a readable audio file"),
    "au_2_ghz": (lambda: au(bytes(2 * 16_000), rate=2 * 10**9), "8000-96000 Hz is accepted"),
    "au_1_hz": (lambda: au(bytes(2 * 16_000), rate=1), "8000-96000 Hz is accepted"),
}

# Reads each file in a fresh process: forked, one per file, from a small server process that has
# imported the reader once (a new interpreter per file would cost a second of imports each).
READER = """
import json, os, sys
from qwen_stream.cloning import VoiceError, decode_base64_audio, read_audio

def peak_kib():
    # VmHWM, not ru_maxrss: ru_maxrss carries over the peak of the process that spawned this one
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

def measure(path, mode):
    data = open(path, "rb").read()
    before = peak_kib()
    try:
        if mode == "base64":
            data = decode_base64_audio(data.decode(), 10 * 2**20)
        samples, rate = read_audio(data)
        result = {"seconds": len(samples) / rate}
    except VoiceError as e:
        result = {"error": str(e)}
    result["growth_mib"] = (peak_kib() - before) / 1024
    return result

for line in sys.stdin:
    path, mode = line.split()
    if os.fork() == 0:
        try:
            result = measure(path, mode)
        except BaseException as e:
            result = {"crashed": repr(e)}
        print(json.dumps(result), flush=True)
        os._exit(0)
    if os.wait()[1]:  # killed (out of memory?) before it could answer
        print(json.dumps({"crashed": "killed"}), flush=True)
"""


@pytest.fixture(scope="module")
def reader():
    if not Path("/proc/self/status").exists() or not hasattr(os, "fork"):
        pytest.skip("peak RSS is read from /proc")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def read_in_child(reader, tmp_path: Path, data: bytes, mode: str = "raw") -> dict:
    path = tmp_path / "audio"
    path.write_bytes(data)
    reader.stdin.write(f"{path} {mode}\n")
    reader.stdin.flush()
    if not select.select([reader.stdout], [], [], 120)[0]:
        reader.kill()
        pytest.fail("the reader process did not answer")
    line = reader.stdout.readline()
    assert line, "the reader process died"
    result = json.loads(line)
    assert "crashed" not in result, result
    return result


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_is_refused_with_bounded_memory(reader, tmp_path, name):
    data = BOMBS[name]()
    assert len(data) < 10 * 2**20
    result = read_in_child(reader, tmp_path, data)
    assert result["growth_mib"] < PEAK_GROWTH_LIMIT_MIB, result
    assert LIMIT_NAMED in result.get("error", ""), result


def test_base64_bomb_is_refused_with_bounded_memory(reader, tmp_path):
    """The legacy `ref_audio` path: base64 text -> bytes -> read_audio, as the service does it."""
    text = "data:audio/flac;base64," + base64.b64encode(long_flac(MINUTES)).decode()
    result = read_in_child(reader, tmp_path, text.encode(), mode="base64")
    assert result["growth_mib"] < PEAK_GROWTH_LIMIT_MIB, result
    assert LIMIT_NAMED in result.get("error", ""), result


@pytest.mark.parametrize("name", ABSURD_HEADERS)
def test_absurd_header_is_refused_before_allocating(reader, tmp_path, name):
    build, message = ABSURD_HEADERS[name]
    result = read_in_child(reader, tmp_path, build())
    assert result["growth_mib"] < PEAK_GROWTH_LIMIT_MIB, result
    assert message in result.get("error", ""), result


LYING_HEADERS = {
    # libsndfile bounds a WAV's data size by the file's, and decodes no further than an Ogg's last
    # granule or an MP3's Info frame says: these read short, or are refused, never decoded whole.
    "wav_data_size_4_gib": lambda: wav((tone(3, 16_000)[:, 0] * 32767).astype("<i2").tobytes(), data_size=2**32 - 16),
    "ogg_vorbis_end_granule_says_1_s": lambda: stretch_ogg(ogg_clip("VORBIS", 48_000), MINUTES, 48_000, 48_000),
    "mp3_info_frame_says_2_s": lambda: mp3_bomb(MINUTES, info_frame=True),
}


@pytest.mark.parametrize("name", LYING_HEADERS)
def test_header_that_lies_is_read_with_bounded_memory(reader, tmp_path, name):
    result = read_in_child(reader, tmp_path, LYING_HEADERS[name]())
    assert result["growth_mib"] < PEAK_GROWTH_LIMIT_MIB, result
    assert result.get("seconds", 0) <= MAX_REFERENCE_SECONDS or LIMIT_NAMED in result.get("error", ""), result


CLIPS = [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
         ("WAV", "GSM610"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("OGG", "OPUS"),
         ("MP3", "MPEG_LAYER_III"), ("CAF", "ALAC_16")]
LOSSY = {"GSM610", "VORBIS", "OPUS", "MPEG_LAYER_III"}


def similarity(decoded: np.ndarray, original: np.ndarray) -> float:
    """Normalised correlation at the best lag: lossy codecs delay and pad, so samples do not line up."""
    part = decoded[4000:-4000]
    lag = int(np.argmax(np.correlate(original, part, "valid")))
    match = original[lag:lag + len(part)]
    return float(part @ match / np.sqrt((part @ part) * (match @ match)))


@pytest.mark.parametrize("fmt, subtype", CLIPS)
def test_a_normal_clip_reads_as_before(fmt, subtype):
    rate = 8000 if subtype == "GSM610" else 16_000
    channels = 1 if subtype == "GSM610" else 2
    original = tone(5, rate, channels)
    data = encode(original, rate, fmt, subtype)
    samples, got_rate = read_audio(data)
    assert got_rate == rate and samples.dtype == np.float32 and samples.ndim == 1
    # The unbounded read it replaces (MP3 differs by float rounding: that read seeks to 0 first).
    whole = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]
    np.testing.assert_allclose(samples, whole.mean(axis=1), rtol=0, atol=1e-6)
    mono = original.mean(axis=1)
    if subtype in LOSSY:
        assert abs(len(samples) - len(mono)) < 0.1 * rate
        assert similarity(samples, mono) > 0.97
    else:
        tolerance = 1 / 100 if subtype == "PCM_U8" else 1e-4
        np.testing.assert_allclose(samples, mono, atol=tolerance)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("FLAC", "unknown length"),
                                          ("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")])
def test_29_seconds_pass_and_31_are_refused(fmt, subtype):
    def clip(seconds):  # a second of tone, then silence: only the length matters, and silence encodes fast
        samples = np.zeros((int(seconds * 16_000), 1), np.float32)
        samples[:16_000] = tone(1, 16_000)
        if subtype == "unknown length":  # no length in the header: refused by the bounded decode alone
            return flac_unknown_length(encode(samples, 16_000, "FLAC"))
        return encode(samples, 16_000, fmt, subtype)

    samples, rate = read_audio(clip(29))
    assert 29 <= len(samples) / rate < 29.2
    with pytest.raises(VoiceError, match=re.escape(LIMIT_NAMED)):
        read_audio(clip(31))


def test_base64_reference_still_reads():
    data = encode(tone(5, 16_000), 16_000, "FLAC")
    samples, rate = read_audio(decode_base64_audio(base64.b64encode(data).decode(), 10 * 2**20))
    assert rate == 16_000 and len(samples) == 5 * 16_000
