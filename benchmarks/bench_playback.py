"""Playback gaps made by the engine itself: N conversations on an in-process continuous engine, no HTTP.

    python benchmarks/bench_playback.py [--clients 4,8] [--early-chunks on,off] [--reps 3] [--threads 1]

Each conversation speaks `--turns` turns of two sentences, the second submitted when the first ends (one
client's sentences in order, as the server's queues do; the two share one playback estimate, as an utterance's
sentences do), then waits for the turn's audio to play and thinks 1 s; conversations start 0.5 s apart. Every
chunk is timed as the engine hands it out, and a turn's chunks are played by the least forgiving player (it
starts at the turn's first chunk and plays each chunk right after the one before): a gap is a chunk that came
after the audio before it had played. bench_load.py measures the same over HTTP,
where the transport and the client's own threads add gaps of their own; this one shows what the engine's
scheduling (`--early-chunks`) does. Runs of each setting alternate, so drift on a shared machine hits both.

Per row: the gaps (count, total ms), the first chunk's latency per sentence (submit -> first chunk, median and
max, ms) for a turn's first and second sentence, the early chunks sent, the mean step period, and where the
three longest gaps fell (s2c1: before the turn's second sentence's first chunk).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import add_model_args, comma_list, machine, model_path  # noqa: E402

TEXTS = [
    ("Sure, I can help with that.", "Let me check the details for you."),
    ("The train leaves at nine.", "It arrives a little after noon."),
    ("That sounds like a good plan.", "Tell me if anything changes."),
]
FRAME_S = 0.08


def gaps(arrivals: list[tuple[float, int, str]]) -> list[tuple[float, str]]:
    """Seconds the player waited after it had started, and before which chunk: chunks (time, frames, name)
    played back to back."""
    out, position = [], arrivals[0][0]
    for when, frames, name in arrivals:
        if when > position:
            out.append((when - position, name))
            position = when
        position += frames * FRAME_S
    return out


def run(engine, speakers: list[str], clients: int, turns: int, frames: int) -> dict:
    from qwen_stream.events import AudioChunk, End
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.playback import Playback

    sentences: list[tuple[int, float, list[tuple[float, int]]]] = []  # (index in turn, submitted, arrivals)
    # A turn's chunks, both sentences, as its player gets them: (time, frames, "s<sentence>c<chunk>").
    turns_played: list[list[tuple[float, int, str]]] = []
    lock = threading.Lock()

    def say(text: str, speaker: str, playback) -> tuple[float, list[tuple[float, int]]]:
        arrivals: list[tuple[float, int]] = []
        done = threading.Event()

        def emit(event) -> None:
            if isinstance(event, AudioChunk):
                arrivals.append((time.perf_counter(), event.frames))
            elif isinstance(event, End):
                done.set()

        submitted = time.perf_counter()
        request = SynthesisRequest(text, "English", Voice(speaker=speaker), max_frames=frames)
        engine.submit(request, emit, playback=playback)
        if not done.wait(600):
            raise SystemExit("a sentence did not end")
        return submitted, arrivals

    def conversation(i: int) -> None:
        for turn in range(turns):
            playback = Playback()  # one stream per turn, as the server's queues give an utterance's sentences
            spoken = [say(text, speakers[i % len(speakers)], playback) for text in TEXTS[turn % len(TEXTS)]]
            with lock:
                sentences.extend((k, submitted, arrivals) for k, (submitted, arrivals) in enumerate(spoken))
                turns_played.append(
                    [
                        (when, n, f"s{k + 1}c{c + 1}")
                        for k, (_, arrivals) in enumerate(spoken)
                        for c, (when, n) in enumerate(arrivals)
                    ]
                )
            audio = sum(frames for _, arrivals in spoken for _, frames in arrivals) * FRAME_S
            time.sleep(max(0.0, spoken[0][1][0][0] + audio - time.perf_counter()) + 1.0)

    early_before = engine.report()["early_chunks"]
    threads = []
    for i in range(clients):
        threads.append(threading.Thread(target=conversation, args=(i,)))
        threads[-1].start()
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    waits = [g for arrivals in turns_played if arrivals for g in gaps(arrivals)]
    longest = sorted(waits, reverse=True)[:3]
    first = {
        k: [arrivals[0][0] - submitted for j, submitted, arrivals in sentences if j == k and arrivals] for k in (0, 1)
    }
    report = engine.report()
    return {
        "gaps": len(waits),
        "gap_ms": 1000 * sum(g for g, _ in waits),
        "where": " ".join(f"{name}:{1000 * g:.0f}" for g, name in longest) or "-",
        "first": {k: (1000 * statistics.median(v), 1000 * max(v)) for k, v in first.items()},
        "early": report["early_chunks"] - early_before,
        "period_ms": 1000 * report["step_period_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--clients", default="4,8")
    parser.add_argument("--early-chunks", default="on,off", type=comma_list("on", "off"))
    parser.add_argument("--reps", type=int, default=3, help="runs of each setting, alternating")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40, help="frames per sentence (the tiny model rarely ends)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from qwen_stream.engine import Engine, collect
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.model import load_model
    from qwen_stream.settings import EngineSettings, ModelSettings

    model = load_model(ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype))
    speakers = model.speakers
    settings = args.early_chunks.split(",")
    print(
        f"# bench_playback: {machine()}, threads {torch.get_num_threads()}, model {model.source}, "
        f"max batch {args.max_batch}, {args.frames} frames per sentence, {args.turns} turns"
    )
    print(
        "| N | early chunks | run | gaps | gap ms | turn's first: first chunk median / max ms "
        "| second: median / max ms | early chunks sent | step period ms | longest gaps (sentence, chunk: ms) |"
    )
    print("|---:|---|---:|---:|---:|---|---|---:|---:|---|")
    for clients in (int(n) for n in args.clients.split(",")):
        for rep in range(args.reps):
            for early in settings:
                engine = Engine(
                    model,
                    EngineSettings(
                        model=ModelSettings(path=model.source), max_batch=args.max_batch, early_chunks=early
                    ),
                )
                try:
                    collect(
                        engine.stream(SynthesisRequest("Warm up.", "English", Voice(speaker=speakers[0]), max_frames=5))
                    )
                    r = run(engine, speakers, clients, args.turns, args.frames)
                finally:
                    engine.close()
                (m0, x0), (m1, x1) = r["first"][0], r["first"][1]
                print(
                    f"| {clients} | {early} | {rep + 1} | {r['gaps']} | {r['gap_ms']:.1f} | {m0:.0f} / {x0:.0f} "
                    f"| {m1:.0f} / {x1:.0f} | {r['early']} | {r['period_ms']:.1f} | {r['where']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
