"""Concurrent utterances on the continuous engine, without the HTTP stack: first audio and throughput at c at once.

    python benchmarks/bench_concurrency.py [--model-path DIR --device cuda] [--concurrency 1,4,10,32]
                                           [--frames 60] [--cuda-graphs off,on] [--torch-compile off,on]
                                           [--static-len 640] [--decode carried,window] [--decode-graphs off]
                                           [--noise-draws token,block]

For each `--cuda-graphs` and `--torch-compile` setting an engine is built (`--max-batch` = the largest c) and
warmed up as the server warms up (every batch-size bucket's step built, so capture and compiling are not timed; the
warm-up's seconds are reported); then for each c, c utterances are submitted at once, each capped at `--frames`
frames, and every one's first PCM chunk is timed from its submission. Reported: first audio p50 / p95 / max over
the c utterances, audio seconds made per wall second, and the engine's mean step and decode-stage times; then where
the first audio goes (median per stage: queue, prefill, first step, decode). This is what the GPU suite runs, since
the GPU image carries the engine but not the server's stack; `bench_load.py` is the same question asked through
real HTTP conversations. With CUDA graphs the warm-up also captures the carried chunk decode; `--decode-graphs off`
lets it go again, to time the step's graphs alone. `--noise-draws` compares how rows draw their sampling noise (a
call per token, or blocks of steps).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_model_args, comma_list, machine, median, model_path, pct  # noqa: E402

STAGES = ("queue", "prefill", "first step", "decode")
TEXT = "Streaming speech synthesis should start talking almost at once, for every one of many callers."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--concurrency", default="1,4,10,32")
    parser.add_argument("--frames", type=int, default=60, help="frames per utterance (80 ms each)")
    parser.add_argument("--cuda-graphs", default="off,on", type=comma_list("auto", "on", "off"),
                        help="settings to compare (auto, on, off)")
    parser.add_argument("--torch-compile", default="off", type=comma_list("on", "off"),
                        help="settings to compare (on, off), with each of the above")
    parser.add_argument("--static-len", type=int, default=0, help="static KV cache positions per row (0: auto)")
    parser.add_argument("--decode", default="carried", type=comma_list("carried", "window"),
                        help="chunk decoding modes to compare (carried, window)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--noise-draws", default="auto", type=comma_list("auto", "token", "block"),
                        help="settings to compare (auto, token, block)")
    parser.add_argument("--decode-graphs", choices=("on", "off"), default="on",
                        help="off: the chunk decode runs eagerly even where the warm-up captured it")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from qwen_stream.engine import Engine
    from qwen_stream.events import AudioChunk, End
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.model import load_model
    from qwen_stream.settings import FRAME_SECONDS, EngineSettings, ModelSettings, StreamingSettings

    settings = ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype)
    model = load_model(settings)
    speakers = model.speakers
    levels = [int(c) for c in args.concurrency.split(",")]

    def request(i: int) -> SynthesisRequest:
        return SynthesisRequest(TEXT, "English", Voice(speaker=speakers[i % len(speakers)]), max_frames=args.frames)

    def burst(engine: Engine, count: int) -> tuple[list[float], float, int, list[tuple[float, ...]]]:
        """Submits `count` utterances at once; returns first-audio seconds, wall seconds, frames made, and each
        utterance's stages before its first audio (STAGES, seconds)."""
        firsts: list[float] = []
        stages: list[tuple[float, ...]] = []
        frames = [0]
        lock, done = threading.Lock(), threading.Semaphore(0)

        def listener(submitted: float):
            seen = [False]

            def on_event(event) -> None:
                if isinstance(event, AudioChunk) and not seen[0]:
                    seen[0] = True
                    with lock:
                        firsts.append(time.perf_counter() - submitted)
                elif isinstance(event, End):
                    s = event.stats
                    marks = (s.submitted, s.started, s.joined, s.first_frame, s.first_chunk)
                    with lock:
                        frames[0] += s.frames
                        if all(mark is not None for mark in marks):
                            stages.append(tuple(b - a for a, b in zip(marks, marks[1:])))
                    done.release()

            return on_event

        start = time.perf_counter()
        for i in range(count):
            engine.submit(request(i), listener(time.perf_counter()))
        for _ in range(count):
            if not done.acquire(timeout=600):
                raise SystemExit("an utterance never ended")
        return firsts, time.perf_counter() - start, frames[0], stages

    rows = []
    graph_modes, compile_modes = args.cuda_graphs.split(","), args.torch_compile.split(",")
    variants = [
        (g, c, d, n)
        for n in args.noise_draws.split(",")
        for d in args.decode.split(",")
        for c in compile_modes
        for g in graph_modes
    ]
    for graphs, compiled, decode, draws in variants:
        engine = Engine(
            model,
            EngineSettings(
                model=settings,
                max_batch=max(levels),
                cuda_graphs=graphs,
                static_len=args.static_len,
                torch_compile=compiled,
                streaming=StreamingSettings(decode=decode),
                noise_draws=draws,
            ),
        )
        try:
            warm = time.perf_counter()
            # What the server does before it is ready: every bucket's step built (captured, compiled); untimed.
            engine.warmup(request(0))
            warm = time.perf_counter() - warm
            if args.decode_graphs == "off" and model.carried is not None:
                model.carried.graphs = None
                engine.load.decode_cuda_graphs = False
            for count in levels:
                firsts, wall, frames, stages = burst(engine, count)
                report = engine.report()
                rows.append((graphs, compiled, decode, report, count, firsts, wall, frames, warm, stages))
        finally:
            engine.close()
            if model.carried is not None:  # the chunk decode's graphs live on the model: not for the next variant
                model.carried.graphs = None

    print(
        f"# bench_concurrency: {machine()}, model {model.source} ({model.placement.dtype}, "
        f"{model.placement.attention}), {args.frames} frames per utterance, all submitted at once"
    )
    print(
        "| --cuda-graphs | --torch-compile | --decode | KV cache | step ran as | noise draws | warm-up s | c "
        "| first audio p50 ms "
        "| p95 ms | max ms | audio s per wall s | step ms | decode ms |"
    )
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for graphs, compiled, decode, report, count, firsts, wall, frames, warm, _ in rows:
        kinds = ("torch_compile", "cuda_graphs", "prefill_cuda_graphs", "decode_cuda_graphs")
        ran = "+".join(kind for kind in kinds if report[kind]) or "eager"
        print(
            f"| {graphs} | {compiled} | {decode} | {report['kv_cache']} | {ran} | {report['noise_draws']} "
            f"| {warm:.0f} | {count} "
            f"| {1000 * pct(firsts, 50):.0f} | {1000 * pct(firsts, 95):.0f} "
            f"| {1000 * max(firsts):.0f} | {frames * FRAME_SECONDS / wall:.1f} "
            f"| {1000 * float(report['step_seconds']):.1f} | {1000 * float(report['decode_seconds']):.1f} |"
        )

    print()
    print(
        "Where the first audio goes: median ms over the c utterances of each stage (queue: waiting for the engine; "
        "prefill: the group's prompts and forward, joining the batch; first step: until its first frame; "
        "decode: that chunk decoded and handed out)."
    )
    print("| --cuda-graphs | --torch-compile | --decode | noise draws | c | " + " | ".join(STAGES) + " |")
    print("|---|---|---|---|---:|" + "---:|" * len(STAGES))
    for graphs, compiled, decode, report, count, _, _, _, _, stages in rows:
        medians = [1000 * median([row[i] for row in stages]) for i in range(len(STAGES))]
        print(
            f"| {graphs} | {compiled} | {decode} | {report['noise_draws']} | {count} | "
            + " | ".join(f"{value:.1f}" for value in medians)
            + " |"
        )

if __name__ == "__main__":
    main()
