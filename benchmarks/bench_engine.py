"""Engine speed: time to first PCM chunk, per-frame step time, RTF and peak memory, side by side with the
library's own non-streaming generate on the same text, in one run.

    python benchmarks/bench_engine.py [--model-path DIR --device cuda] [--frames 100] [--runs 5]

RTF = compute time / audio time (below 1 is faster than real time). Streaming rows time the whole job
(generation + window decodes); the library row times `generate_custom_voice` (generation + one full
decode). Frames are capped at --frames so every row makes the same amount of audio."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import add_model_args, machine, median, model_path  # noqa: E402

TEXT = "Streaming speech synthesis should start talking almost at once and never stall in the middle."


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--first-chunk-size", type=int, default=1)
    args = parser.parse_args()

    from qwen_stream.code_predictor import install_fast_code_predictor, uninstall_fast_code_predictor
    from qwen_stream.engine import Engine
    from qwen_stream.events import End
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.model import load_model
    from qwen_stream.settings import FRAME_SECONDS, EngineSettings, ModelSettings, StreamingSettings

    settings = ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype)
    model = load_model(settings)
    if model.family != "custom_voice":
        raise SystemExit("bench_engine compares against generate_custom_voice: use a CustomVoice checkpoint")
    speaker = model.speakers[0]
    streaming = StreamingSettings(chunk_size=args.chunk_size, first_chunk_size=args.first_chunk_size)
    engine = Engine(model, EngineSettings(model=settings, streaming=streaming))
    request = SynthesisRequest(TEXT, "English", Voice(speaker=speaker), max_frames=args.frames)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def streaming_runs(label: str):
        engine.warmup(request)
        ttfb, rtf, step = [], [], []
        for _ in range(args.runs):
            end = [e for e in engine.stream(request) if isinstance(e, End)][0]
            s = end.stats
            ttfb.append(s.engine_ttfb)
            rtf.append(s.rtf)
            step.append((s.finished - s.started - s.decode_seconds) / s.frames)
        return (label, 1000 * median(ttfb), 1000 * median(step), median(rtf), end.stats.frames)

    rows = [streaming_runs("qwen-stream, lean code predictor")]
    uninstall_fast_code_predictor(model.inner.talker.code_predictor)
    rows.append(streaming_runs("qwen-stream, HF code predictor"))
    install_fast_code_predictor(model.inner.talker.code_predictor)
    engine.close()

    def library_run():
        sync()
        t0 = time.perf_counter()
        wavs, _ = model.tts.generate_custom_voice(text=TEXT, speaker=speaker, language="English",
                                                  max_new_tokens=args.frames + 1)
        sync()
        return time.perf_counter() - t0, len(wavs[0]) / 1920

    uninstall_fast_code_predictor(model.inner.talker.code_predictor)  # the library exactly as shipped
    library_run()
    times, frames = zip(*(library_run() for _ in range(args.runs)))
    lib_time, lib_frames = median(times), frames[0]
    rows.append(("qwen-tts generate_custom_voice (non-streaming)", 1000 * lib_time, 1000 * lib_time / lib_frames,
                 lib_time / (lib_frames * FRAME_SECONDS), int(lib_frames)))

    print(f"# bench_engine: {machine()}, model {model.source} ({model.placement.dtype}, "
          f"{model.placement.attention}), chunk {args.chunk_size}, first chunk {args.first_chunk_size}, "
          f"median of {args.runs} runs")
    print("| path | time to first audio ms | ms per frame step | RTF | frames |")
    print("|---|---:|---:|---:|---:|")
    for label, first, per_frame, rtf, n in rows:
        print(f"| {label} | {first:.0f} | {per_frame:.1f} | {rtf:.2f} | {n} |")
    print(f"peak memory: {peak_memory_mb(model.device):.0f} MiB ({'GPU allocated' if model.device.type == 'cuda' else 'process RSS'})")


if __name__ == "__main__":
    main()
