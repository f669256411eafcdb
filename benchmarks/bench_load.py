"""Voice-chat load: N conversations at once against a real server, for each --engine.

    python benchmarks/bench_load.py [--engines static,continuous] [--clients 1,2,4,8] [--turns 3]

Each conversation is one client id. Per turn it posts two sentences 0.6 s apart (POST /tts/stream, read as
it streams), plays them back to back from the first byte on, waits until playback ends, thinks 1 s, and
goes on; conversations start `--stagger` seconds apart. Per sentence: first audio = post -> first body byte.
Playback stall = time the simulated player had nothing to play once a turn's playback had started (a gap
between the two sentences counts). Throughput = all audio seconds / wall seconds of the whole row.

The server runs the tiny checkpoint (random weights: it rarely says EOS, so a sentence lasts --max-frames)
with --threads 1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from benchmarks._common import ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402

BYTES_PER_SECOND = 24000 * 2
SENTENCES = [
    ("Sure, I can help with that.", "Let me check the details for you."),
    ("The train leaves at nine.", "It arrives a little after noon."),
    ("That sounds like a good plan.", "Tell me if anything changes."),
]


@dataclass
class Sentence:
    posted: float
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)

    @property
    def first_audio(self) -> float | None:
        return self.arrivals[0][0] - self.posted if self.arrivals else None

    @property
    def audio_seconds(self) -> float:
        return sum(n for _, n in self.arrivals) / BYTES_PER_SECOND


def speak(client: httpx.Client, client_id: str, text: str, out: Sentence) -> None:
    body = {"text": text, "client_id": client_id, "language": "English"}
    with client.stream("POST", "/tts/stream", json=body) as response:
        response.raise_for_status()
        for data in response.iter_raw():
            if data:
                out.arrivals.append((time.perf_counter(), len(data)))


def play(sentences: list[Sentence]) -> tuple[float, float]:
    """The player's end time and its stall seconds: it starts at the first byte and plays every arrival in
    order, as soon as it has it."""
    arrivals = [a for s in sentences for a in s.arrivals]
    if not arrivals:
        return time.perf_counter(), 0.0
    position, stall = arrivals[0][0], 0.0
    for when, size in arrivals:
        if when > position:
            stall += when - position
            position = when
        position += size / BYTES_PER_SECOND
    return position, stall


def conversation(url: str, name: str, turns: int, gap: float, think: float, results: dict) -> None:
    sentences, stalls = [], 0.0
    with httpx.Client(base_url=url, timeout=600) as client:
        for turn in range(turns):
            first, second = SENTENCES[turn % len(SENTENCES)]
            pair = [Sentence(time.perf_counter())]
            threads = [threading.Thread(target=speak, args=(client, name, first, pair[0]))]
            threads[0].start()
            time.sleep(gap)
            pair.append(Sentence(time.perf_counter()))
            threads.append(threading.Thread(target=speak, args=(client, name, second, pair[1])))
            threads[1].start()
            for thread in threads:
                thread.join()
            ends, stall = play(pair)
            stalls += stall
            sentences += pair
            time.sleep(max(0.0, ends - time.perf_counter()) + think)
    results[name] = (sentences, stalls)


def row(url: str, clients: int, args) -> dict:
    results: dict = {}
    started = time.perf_counter()
    threads = []
    for i in range(clients):
        thread = threading.Thread(target=conversation, args=(url, f"conv-{i}", args.turns, args.gap, args.think,
                                                             results))
        thread.start()
        threads.append(thread)
        time.sleep(args.stagger)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    sentences = [s for ss, _ in results.values() for s in ss]
    first = [s.first_audio for s in sentences if s.first_audio is not None]
    # A turn's first sentence is what the user waits for; the second queues behind it (one client's sentences
    # play in order), so its first audio includes the rest of the first one's generation.
    opening = [s.first_audio for s in sentences[::2] if s.first_audio is not None]
    audio = sum(s.audio_seconds for s in sentences)
    stall = sum(st for _, st in results.values())
    return {
        "clients": clients,
        "p50": statistics.median(first),
        "p95": pct(first, 95),
        "max": max(first),
        "opening_p50": statistics.median(opening),
        "opening_p95": pct(opening, 95),
        "stall_per_audio_s": stall / audio if audio else float("nan"),
        "audio_per_wall_s": audio / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--engines", default="static,continuous")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.6, help="seconds between a turn's two posts")
    parser.add_argument("--think", type=float, default=1.0, help="seconds after playback before the next turn")
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between conversation starts")
    parser.add_argument("--extra", default="--threads 1 --max-batch 8 --max-frames 40",
                        help="server flags besides the model and --engine")
    args = parser.parse_args()

    print(f"# {machine()}; server flags: {args.extra}")
    print("| engine | N | first audio p50 s | p95 s | max s | turn's first sentence p50 / p95 s "
          "| stall s per audio s | audio s per wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for engine in args.engines.split(","):
        server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                               "--engine", engine, *args.extra.split())
        with server:
            for clients in (int(n) for n in args.clients.split(",")):
                r = row(server.url, clients, args)
                print(f"| {engine} | {clients} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | "
                      f"{r['opening_p50']:.2f} / {r['opening_p95']:.2f} | "
                      f"{r['stall_per_audio_s']:.4f} | {r['audio_per_wall_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
