"""The chunk decode over fixed buffers (captured_decode.py): what a CUDA graph captures, run eagerly here, against
the carried decode it stands for; on CUDA, the captured graphs against it."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch

from qwen_stream.captured_decode import ChunkGraphs, StaticChunk
from qwen_stream.carried_decode import CarriedDecoder, DecoderState
from qwen_stream.decoder import pcm16_to_float
from qwen_stream.engine import Engine
from qwen_stream.events import AudioChunk, End
from qwen_stream.generation import SynthesisRequest, Voice
from qwen_stream.settings import EngineSettings, ModelSettings, StreamingSettings
from tests.engine.test_engine import offline_pcm
from tests.engine.test_static_step import HostReads

ROWS = 3
FRAMES = 40


@pytest.fixture(scope="module")
def utterances(custom_voice_model):
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 2048, (ROWS, FRAMES, 16), generator=generator)
    return codes, torch.stack([custom_voice_model.decode(row) for row in codes])


def stream(decode, codes: torch.Tensor) -> list[torch.Tensor]:
    """Three rows through `decode` in chunks of 1, 2, then 4 frames (a tail at the end), starting at different
    steps, so calls mix fresh rows with rows part-way through and have 1 to 3 rows of a bucket of 4."""
    states = [DecoderState() for _ in range(ROWS)]
    done, sizes = [0] * ROWS, [1] * ROWS
    got: list[list[torch.Tensor]] = [[] for _ in range(ROWS)]
    step = 0
    while any(d < FRAMES for d in done):
        started = [row for row in range(ROWS) if row * 2 <= step and done[row] < FRAMES]
        by_length: dict[int, list[int]] = {}
        for row in started:
            by_length.setdefault(min(sizes[row], FRAMES - done[row]), []).append(row)
        for length, rows in by_length.items():
            batch = torch.stack([codes[row, done[row] : done[row] + length] for row in rows])
            wav, new = decode(batch, [states[row] for row in rows])
            for i, row in enumerate(rows):
                got[row].append(wav[i])
                states[row], done[row], sizes[row] = new[i], done[row] + length, min(4, sizes[row] * 2)
        step += 1
    return [torch.cat(row) for row in got]


def test_the_chunk_decode_reads_nothing_back_to_the_host(custom_voice_model):
    """What makes it capturable: a chunk of rows with states, run under a mode that sees every op."""
    carried = CarriedDecoder(custom_voice_model._decoder)
    chunk = StaticChunk(carried, rows=2, frames=4)
    _, (state,) = carried.decode(torch.zeros(1, 3, 16, dtype=torch.long), [DecoderState()])
    chunk.load(torch.ones(2, 4, 16, dtype=torch.long), [state, DecoderState()])
    with torch.inference_mode(), HostReads() as reads:
        chunk.run()
    assert reads.seen == []
    assert chunk.wav.shape == (2, 4 * 1920)


def test_static_chunks_make_the_carried_decodes_samples(custom_voice_model, utterances):
    codes, one_shot = utterances
    plain = CarriedDecoder(custom_voice_model._decoder)
    static = CarriedDecoder(custom_voice_model._decoder)
    static.graphs = ChunkGraphs(static, buckets=[1, 2, 4], frames=range(1, 5), capture=False)
    served = []
    held = static.graphs.decode

    def counting(codes, states):
        out = held(codes, states)
        served.append(out is not None)
        return out

    static.graphs.decode = counting  # type: ignore[method-assign]
    expected, got = stream(plain.decode, codes), stream(static.decode, codes)
    assert served and all(served)  # every call had a shape the buffers hold
    peak = one_shot.abs().max()
    for row in range(ROWS):
        assert got[row].shape == one_shot[row].shape
        assert (got[row] - expected[row]).abs().max() <= 1e-5 * peak
        assert (got[row] - one_shot[row]).abs().max() <= 1e-5 * peak


def test_states_carry_over_between_the_static_and_the_plain_decode(custom_voice_model, utterances):
    """A row can go on eagerly after a static chunk (a shape the buffers lack) and back."""
    codes, one_shot = utterances
    carried = CarriedDecoder(custom_voice_model._decoder)
    graphs = ChunkGraphs(carried, buckets=[2], frames=[4], capture=False)
    state = DecoderState()
    wavs = []
    for start, length in [(0, 4), (4, 6), (10, 4), (14, 26)]:
        piece = codes[:1, start : start + length]
        out = graphs.decode(piece, [state])
        if length != 4:
            assert out is None  # not a held shape: the caller decodes eagerly
            out = carried.decode(piece, [state])
        wav, (state,) = out
        wavs.append(wav[0])
    assert state.frames == FRAMES
    streamed = torch.cat(wavs)
    assert (streamed - one_shot[0]).abs().max() <= 1e-5 * one_shot[0].abs().max()


def test_shapes_it_does_not_hold_and_an_icl_priming_decode_eagerly(custom_voice_model, utterances):
    codes, _ = utterances
    carried = CarriedDecoder(custom_voice_model._decoder)
    carried.graphs = ChunkGraphs(carried, buckets=[1, 2], frames=[1, 4], capture=False)
    fresh = [DecoderState() for _ in range(3)]
    assert carried.graphs.decode(codes[:3, :4], fresh) is None  # more rows than the largest bucket
    assert carried.graphs.decode(codes[:1, :2], fresh[:1]) is None  # a length not held
    # An ICL reference (30 frames) priming a fresh state before 4 new ones: only the last 4 + 6 frames go
    # through the sample-rate stack, which no held shape does.
    wav, (state,) = carried.decode(codes[:1, :34], fresh[:1], keep=4)
    assert wav.shape == (1, (4 + 6) * 1920) and state.frames == 34


def test_the_engine_streams_through_static_chunks_exactly(custom_voice_model):
    """Three requests at once through the continuous engine with the chunk decode served from fixed buffers:
    each one's PCM equals one decoder call over its frames, to the PCM step."""
    carried = custom_voice_model.carried
    assert carried is not None and carried.graphs is None
    carried.graphs = ChunkGraphs(carried, buckets=[1, 2, 4], frames=range(1, 5), capture=False)
    settings = EngineSettings(
        model=ModelSettings(path=custom_voice_model.source),
        streaming=StreamingSettings(chunk_size=4, first_chunk_size=1),
        max_batch=4,
    )
    engine = Engine(custom_voice_model, settings)
    texts = ["First of three.", "The second one, a little longer.", "Third."]
    received: list[queue.Queue] = [queue.Queue() for _ in texts]
    try:
        for seed, (text, events) in enumerate(zip(texts, received, strict=True)):  # queued together: one batch
            request = SynthesisRequest(text, "English", Voice(speaker="Serena"), seed=seed, max_frames=30)
            engine.submit(request, events.put, keep_codes=True)
        results = [drain(events) for events in received]
        assert engine.load.steps > 0
    finally:
        engine.close()
        carried.graphs = None
    for events in results:
        end = events[-1]
        assert isinstance(end, End) and end.codes is not None
        streamed = pcm16_to_float(b"".join(e.pcm for e in events if isinstance(e, AudioChunk)))
        reference = offline_pcm(custom_voice_model, end.codes)
        assert len(streamed) == len(reference) == len(end.codes) * 1920
        assert np.abs(streamed - reference).max() <= 1.5 / 32767


def drain(events: queue.Queue) -> list:
    got = [events.get(timeout=120)]
    while not isinstance(got[-1], End):
        got.append(events.get(timeout=120))
    return got


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_captured_chunks_make_the_static_chunks_samples(custom_voice_dir, utterances):
    from qwen_stream.model import load_model

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))
    codes = utterances[0].cuda()
    eager, captured = CarriedDecoder(model._decoder), CarriedDecoder(model._decoder)
    eager.graphs = ChunkGraphs(eager, buckets=[1, 2, 4], frames=range(1, 5), capture=False)
    captured.graphs = ChunkGraphs(captured, buckets=[1, 2, 4], frames=range(1, 5), capture=True)
    assert len(captured.graphs) == 12
    for want, got in zip(stream(eager.decode, codes), stream(captured.decode, codes), strict=True):
        assert (want - got).abs().max() <= 1e-5 * want.abs().max()  # the same kernels; cuBLAS may pick others


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_warm_up_captures_the_chunk_decode_and_both_graphs_replay_side_by_side(custom_voice_dir):
    """The server's path: warm-up captures the step's and the chunk decode's graphs; then four rows at once,
    the decode on its own thread and stream beside the step's replays (recorded on separate streams, so they
    never share a cuBLAS workspace). Frames equal the eager engine's; each PCM equals one-shot decoding of
    its frames (to TF32 convolution rounding: a race would be garbage, not rounding)."""
    from qwen_stream.model import load_model

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))
    texts = ["First of four rows.", "The second one, a little longer than the first.", "Third.", "And the fourth."]

    def serve(graphs: str) -> list[list]:
        settings = EngineSettings(model=ModelSettings(path=str(custom_voice_dir)), max_batch=4, cuda_graphs=graphs,
                                  decode_overlap="on", static_len=256)
        engine = Engine(model, settings)
        received: list[queue.Queue] = [queue.Queue() for _ in texts]
        try:
            engine.warmup(SynthesisRequest("Warm up.", "English", Voice(speaker="Serena"), max_frames=4))
            report = engine.report()
            for kind in ("cuda_graphs", "prefill_cuda_graphs", "decode_cuda_graphs"):
                assert report[kind] is (graphs == "on"), kind
            assert report["noise_draws"] == "block"  # auto: blocks of draws on CUDA
            for seed, (text, events) in enumerate(zip(texts, received, strict=True)):
                request = SynthesisRequest(text, "English", Voice(speaker="Serena"), seed=seed, max_frames=40)
                engine.submit(request, events.put, keep_codes=True)
            return [drain(events) for events in received]
        finally:
            engine.close()

    captured = serve("on")
    assert model.carried is not None and model.carried.graphs is not None
    assert len(model.carried.graphs) == 3 * 4  # buckets 1, 2, 4; chunk lengths 1 to 4
    model.carried.graphs = None
    eager = serve("off")
    for got, want in zip(captured, eager, strict=True):
        assert torch.equal(got[-1].codes.cpu(), want[-1].codes.cpu())
        streamed = pcm16_to_float(b"".join(e.pcm for e in got if isinstance(e, AudioChunk)))
        reference = offline_pcm(model, got[-1].codes)
        assert len(streamed) == len(reference) and np.abs(streamed - reference).max() <= 0.01
