"""Encoders and the time-stretch stage, without a server. Every encoded stream is read back by a decoder
that is not FFmpeg (see tests/decoders.py)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf

from qwen_stream.audio import (
    FORMATS,
    AudioPipeline,
    PcmEncoder,
    TimeStretch,
    WavEncoder,
    atempo_chain,
    encode_stream,
    wav_header,
)
from qwen_stream.settings import SAMPLE_RATE, SAMPLES_PER_FRAME

from tests.decoders import decode, flac_streaminfo, pyav_decode

# Chunk sizes as the server sends them (1, 2, 4, 4... frames), then an odd-sized tail.
SCHEDULE = [1, 2, 4, 4, 4, 4]


def tone(seconds: float, hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def chunks(samples: np.ndarray, schedule=SCHEDULE) -> list[bytes]:
    data = samples.tobytes()
    out, pos = [], 0
    for frames in schedule:
        out.append(data[pos:pos + frames * SAMPLES_PER_FRAME * 2])
        pos += frames * SAMPLES_PER_FRAME * 2
    out.append(data[pos:])
    return [c for c in out if c]


def run(stage, pieces: list[bytes]) -> tuple[list[bytes], bytes]:
    outputs = [stage.push(p) for p in pieces]
    tail = stage.finish()
    stage.close()
    return outputs, tail


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


# -- pcm and wav -------------------------------------------------------------------------------------


def test_pcm_passes_bytes_through_and_keeps_an_odd_byte_for_the_next_chunk():
    enc = PcmEncoder()
    assert enc.push(b"\x01\x02\x03") == b"\x01\x02"
    assert enc.push(b"\x04\x05") == b"\x03\x04"
    assert enc.push(b"\x06") == b"\x05\x06"
    assert enc.finish() == b""


def test_wav_header_announces_unknown_length_and_goes_out_with_the_first_audio():
    header = wav_header()
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF and struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    fmt_tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", header[20:36])
    assert (fmt_tag, channels, rate, byte_rate, align, bits) == (1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
    enc = WavEncoder()
    assert enc.push(b"\x01") == b""  # half a sample: nothing to send yet
    assert enc.push(b"\x02\x03\x04") == header + b"\x01\x02\x03\x04"
    assert enc.push(b"\x05\x06") == b"\x05\x06"
    assert enc.finish() == b""
    assert WavEncoder().finish() == header  # an utterance with no audio is still a (empty) WAV file


# -- real codecs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wav", "mp3", "opus", "aac"])  # flac is sent whole: see the flac tests
def test_codec_streams_incrementally_and_decodes_to_the_same_duration(name, tmp_path):
    fmt = FORMATS[name]
    source = tone(2.0)
    outputs, tail = run(AudioPipeline(fmt), chunks(source))
    # Bytes leave as the encoder makes them: by the second chunk (3 frames, 240 ms) every codec has spoken;
    # mp3 and opus already after the first 80 ms frame.
    assert outputs[0] or name == "aac"
    assert outputs[1]
    assert sum(len(o) for o in outputs[:-1]) > 0.5 * sum(len(o) for o in outputs + [tail])
    samples, rate = decode(name, b"".join(outputs) + tail, tmp_path)
    decoded, expected = len(samples) / rate, len(source) / SAMPLE_RATE
    frame = SAMPLES_PER_FRAME / SAMPLE_RATE
    slack = (fmt.priming + fmt.frame_samples) / SAMPLE_RATE
    assert -frame <= decoded - expected <= frame + slack, (decoded, expected)
    body = samples[int(0.2 * rate):int(1.8 * rate)]
    assert abs(dominant_hz(body, rate) - 440) < 5
    if name == "wav":  # lossless: the very same samples
        assert np.array_equal(samples, source)


# -- flac: one whole file, its length in STREAMINFO ----------------------------------------------------


def encode_like_the_route(fmt_name: str, pieces: list[bytes]) -> list[bytes]:
    """The parts encode_stream yields for these PCM chunks, as the /v1/audio/speech route sends them."""

    async def pcm():
        for piece in pieces:
            yield piece

    async def main():
        return [part async for part in encode_stream(AudioPipeline(FORMATS[fmt_name]), pcm())]

    return asyncio.run(main())


def test_flac_file_knows_its_length_and_opens_in_libsndfile_ffmpeg_and_flac(tmp_path):
    # Not a whole number of blocks: FLAC's last block is just shorter, so every reader must see exactly
    # the samples given, no padding.
    source = tone(2.03, hz=440)
    data = b"".join(encode_like_the_route("flac", chunks(source)))
    path = tmp_path / "speech.flac"
    path.write_bytes(data)

    info = flac_streaminfo(data)
    assert (info["sample_rate"], info["channels"], info["bits"]) == (SAMPLE_RATE, 1, 16)
    assert info["total_samples"] == len(source)  # streamed, it was 0 ("unknown")
    assert 0 < info["min_frame"] <= info["max_frame"]  # streamed, the minimum was 0 ("unknown")
    assert info["md5"] == hashlib.md5(source.tobytes()).digest()  # of the PCM, little-endian; streamed: zeros

    assert sf.info(str(path)).frames == len(source)  # libsndfile read 0 as 2**63-1 frames
    samples, rate = sf.read(str(path), dtype="int16")
    assert rate == SAMPLE_RATE and np.array_equal(samples, source)

    samples, duration = pyav_decode(path)
    assert duration == len(source) and np.array_equal(samples, source)

    if shutil.which("flac") is None:
        pytest.skip("checking with the flac command needs it (Debian package flac)")
    subprocess.run(["flac", "--test", "--silent", str(path)], capture_output=True, check=True)
    wav = tmp_path / "speech.wav"
    subprocess.run(["flac", "--decode", "--silent", "-o", str(wav), str(path)], capture_output=True, check=True)
    samples, rate = sf.read(str(wav), dtype="int16")
    assert rate == SAMPLE_RATE and np.array_equal(samples, source)


def test_flac_sends_nothing_before_finish_then_the_whole_file(tmp_path):
    pipeline = AudioPipeline(FORMATS["flac"])
    source = tone(1.0)
    outputs, tail = run(pipeline, chunks(source))
    assert not any(outputs)  # a byte sent early could not be taken back when STREAMINFO is rewritten
    assert flac_streaminfo(tail)["total_samples"] == len(source)
    samples, rate = decode("flac", tail, tmp_path)
    assert rate == SAMPLE_RATE and np.array_equal(samples, source)


def test_an_encoder_closed_midway_frees_itself_and_refuses_more():
    from qwen_stream.audio import AudioError

    pipeline = AudioPipeline(FORMATS["mp3"])
    assert pipeline.push(tone(0.5).tobytes())
    pipeline.close()
    pipeline.close()
    with pytest.raises(AudioError):
        pipeline.push(tone(0.1).tobytes())


# -- time-stretch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.25, 0.5, 1.5, 2.0, 4.0])
def test_time_stretch_changes_duration_and_keeps_pitch(speed):
    source = tone(3.0, hz=220)
    outputs, tail = run(TimeStretch(speed), chunks(source, [1, 2, 4, 4, 4, 4, 4, 4, 4, 4]))
    out = np.frombuffer(b"".join(outputs) + tail, dtype="<i2")
    assert abs(len(out) - len(source) / speed) <= 0.02 * len(source) / speed + 0.05 * SAMPLE_RATE
    assert abs(dominant_hz(out[len(out) // 10:-len(out) // 10], SAMPLE_RATE) - 220) < 4
    # Streaming: output follows input block by block; little is left for the end.
    assert len(tail) < 0.25 * SAMPLE_RATE * 2 / min(speed, 1)
    assert sum(1 for o in outputs[:4] if o) >= 3


def test_time_stretch_range_and_chain():
    assert atempo_chain(0.25) == [0.5, 0.5]
    assert np.prod(atempo_chain(0.3)) == pytest.approx(0.3) and min(atempo_chain(0.3)) >= 0.5
    assert atempo_chain(4.0) == [4.0]
    for bad in (0.2, 4.5):
        with pytest.raises(ValueError, match="between 0.25 and 4.0"):
            TimeStretch(bad)


def test_pipeline_with_speed_feeds_the_encoder_stretched_audio(tmp_path):
    pipeline = AudioPipeline(FORMATS["flac"], speed=2.0)
    source = tone(2.0, hz=330)
    outputs, tail = run(pipeline, chunks(source))
    assert pipeline.pcm_bytes == len(source) * 2
    samples, rate = decode("flac", b"".join(outputs) + tail, tmp_path)
    assert abs(len(samples) - len(source) / 2) <= 0.05 * SAMPLE_RATE
    assert abs(dominant_hz(samples, rate) - 330) < 5


# -- the async chain ---------------------------------------------------------------------------------


def test_encode_stream_closes_its_source_when_abandoned():
    closed = asyncio.Event()

    async def pcm():
        try:
            while True:
                yield tone(0.08).tobytes()
                await asyncio.sleep(0)
        finally:
            closed.set()

    async def main():
        stream = encode_stream(AudioPipeline(FORMATS["opus"]), pcm())
        first = await stream.__anext__()
        assert first.startswith(b"OggS")
        await stream.aclose()
        assert closed.is_set()

    asyncio.run(main())


def test_encode_stream_ends_with_the_encoder_tail():
    async def pcm():
        for piece in chunks(tone(1.0)):
            yield piece

    async def main():
        return [part async for part in encode_stream(AudioPipeline(FORMATS["pcm"], speed=0.5), pcm())]

    parts = asyncio.run(main())
    assert abs(sum(len(p) for p in parts) / 2 - 2 * SAMPLE_RATE) <= 0.05 * SAMPLE_RATE
