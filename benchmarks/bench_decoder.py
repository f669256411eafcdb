"""Streaming decode: fidelity against one full decode, and cost per chunk.

    python benchmarks/bench_decoder.py [--model-path DIR --device cuda] [--frames 150]
                                       [--contexts carried,graphs,0,12,25,72] [--chunks 1,2,4,6,8,12]
                                       [--rows 1,8,32]

For the carried-state decode (`--decode carried`, the server's default), the same over fixed buffers (`graphs`:
captured as CUDA graphs on a GPU, as the server does at warm-up; run eagerly on CPU) and for each left context of
the window decode (0, 12, 25, 72), at each chunk size (1..12), the same generated frames are decoded the
streaming way; max error is in units of the full decode's peak, SNR = 10 log10(signal / error power). Then one
batched 4-frame chunk of `--rows` rows part-way through their utterances, carried eagerly and from the graphs."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import add_model_args, machine, model_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--contexts", default="carried,graphs,0,12,25,72",
                        help="carried, graphs (carried, captured), or window decodes' left contexts")
    parser.add_argument("--chunks", default="1,2,4,6,8,12")
    parser.add_argument("--rows", default="1,8,32", help="rows of the batched chunk decode")
    parser.add_argument("--staged-only", action="store_true",
                        help="only compare one full window decode with the staged decode of its last frames")
    args = parser.parse_args()

    from qwen_stream.decoder import StreamingDecoder, pcm16_to_float, to_pcm16
    from qwen_stream.engine import Engine
    from qwen_stream.events import End
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.model import load_model
    from qwen_stream.settings import EngineSettings, ModelSettings, StreamingSettings

    settings = ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype)
    model = load_model(settings)
    staged_comparison(model)
    if args.staged_only:
        return
    voice = Voice(speaker=model.speakers[0]) if model.family == "custom_voice" else Voice(instruct="")
    engine = Engine(model, EngineSettings(model=settings))
    text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."
    end = [e for e in engine.stream(SynthesisRequest(text, "English", voice, seed=0, max_frames=args.frames),
                                    keep_codes=True) if isinstance(e, End)][0]
    engine.close()
    codes = end.codes.to(model.device)
    reference = pcm16_to_float(to_pcm16(model.decode(codes)))
    peak = float(np.abs(reference).max())
    signal = float(np.mean(reference**2))

    print(f"# bench_decoder: {len(codes)} frames, {machine()}, model {model.source} ({model.placement.dtype})")
    print("| left context | chunk | max error / peak | SNR dB | ms per chunk (p50) |")
    print("|---:|---:|---:|---:|---:|")
    for context in args.contexts.split(","):
        for chunk in [int(c) for c in args.chunks.split(",")]:
            carried = context in ("carried", "graphs")
            streaming = StreamingSettings(chunk_size=chunk, first_chunk_size=chunk, decode="carried" if carried
                                          else "window", left_context=0 if carried else int(context))
            if model.carried is not None:
                model.carried.graphs = None if context != "graphs" else chunk_graphs(model, [1], range(1, chunk + 1))
            decoder = StreamingDecoder(model.decode, streaming, carried=model.carried)
            timings, pieces = [], []
            for frame in codes:
                t0 = time.perf_counter()
                pcm = decoder.push(frame)
                if pcm is not None:
                    if model.device.type == "cuda":
                        torch.cuda.synchronize()
                    timings.append(time.perf_counter() - t0)
                    pieces.append(pcm)
            tail = decoder.flush()
            if tail:
                pieces.append(tail)
            streamed = pcm16_to_float(b"".join(pieces))
            error = streamed - reference
            noise = float(np.mean(error**2))
            snr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
            # Steady state only: windows once the context is full (early windows are shorter).
            steady = timings[len(timings) // 2 :] or timings
            print(f"| {context} | {chunk} | {np.abs(error).max() / peak:.2e} | {snr:.1f} | "
                  f"{1000 * float(np.median(steady)):.1f} |")
    if model.carried is not None:
        batched(model, codes, [int(r) for r in args.rows.split(",")])


def batched(model, codes, rows: list[int], frames: int = 4, runs: int = 10) -> None:
    """One chunk of `frames` frames for each of `rows` rows whose states are 40 frames in: ms per call, carried
    eagerly and from the fixed buffers (captured on CUDA)."""
    from qwen_stream.carried_decode import DecoderState

    carried = model.carried
    carried.graphs = None
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    print(f"\n| rows | carried ms per {frames}-frame chunk call | graphs ms | max difference |")
    print("|---:|---:|---:|---:|")
    for count in rows:
        batch = codes[:40].unsqueeze(0).expand(count, -1, -1)
        _, states = carried.decode(batch, [DecoderState() for _ in range(count)])
        chunk = codes[40 : 40 + frames].unsqueeze(0).expand(count, -1, -1).contiguous()
        graphs = chunk_graphs(model, [count], [frames])
        results = []
        for serve in (None, graphs):
            carried.graphs = serve
            carried.decode(chunk, states)
            sync()
            t0 = time.perf_counter()
            for _ in range(runs):
                wav, _ = carried.decode(chunk, states)
            sync()
            results.append(((time.perf_counter() - t0) / runs, wav))
        carried.graphs = None
        difference = float((results[0][1] - results[1][1]).abs().max())
        print(f"| {count} | {1000 * results[0][0]:.1f} | {1000 * results[1][0]:.1f} | {difference:.1e} |")


def chunk_graphs(model, buckets, frames):
    """The chunk decode's graphs as the server captures them (eager over the same buffers on CPU, or where
    capturing fails: said on the console, so the run still reports)."""
    from qwen_stream.captured_decode import ChunkGraphs

    if model.device.type == "cuda":
        try:
            return ChunkGraphs(model.carried, buckets, frames, capture=True)
        except Exception as error:
            print(f"# capturing the chunk decode failed ({type(error).__name__}: {error}); running it eagerly")
    return ChunkGraphs(model.carried, buckets, frames, capture=False)


def staged_comparison(model, frames: int = 76) -> None:
    """A 72 + 4 frame window: the full decoder forward vs the staged one that runs the conv stack only on
    the frames kept (what every chunk costs)."""
    torch.manual_seed(0)
    codes = torch.randint(0, 2048, (frames, 16))
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def timed(**kw):
        model.decode(codes, **kw)
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            out = model.decode(codes, **kw)
        sync()
        return out, (time.perf_counter() - t0) / 3

    full, full_s = timed()
    print(f"# staged decode, {frames}-frame window ({machine()}): full forward {1000 * full_s:.1f} ms")
    for keep in (1, 4):
        part, part_s = timed(keep=keep)
        error = float((part[-keep * 1920 :] - full[-keep * 1920 :]).abs().max())
        print(f"#   last {keep} frame(s): {1000 * part_s:.1f} ms, max error {error:.1e} (peak {float(full.abs().max()):.2f})")


if __name__ == "__main__":
    main()
