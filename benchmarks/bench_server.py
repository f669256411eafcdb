"""Server latency over real HTTP: TTFB p50/p95, server overhead and interrupt latency.

    python benchmarks/bench_server.py [--model-path DIR --device cuda] [--requests 20]

Starts `server.py` as a child process on a free loopback port. TTFB is measured by the client, from
sending the request to receiving the first body byte. Server overhead = TTFB - the engine's own time to
first chunk for the same request (from the server's request log line, matched by X-Request-Id): it is
everything the server adds (HTTP, validation, text normalization, queueing, hand-off). Interrupt latency
= POST /tts/interrupt sent -> the interrupted stream's body ends, at the client."""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from benchmarks._common import ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402

SENTENCES = [
    "Hello! How can I help you today?",
    "The weather in Paris is sunny with a high of 24 degrees.",
    "Sure, I can set a reminder for 3:30pm tomorrow.",
    "Your order number is 48213 and it ships on Monday.",
    "That is a great question, let me think about it for a moment.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--interrupts", type=int, default=10)
    parser.add_argument("--extra", default="", help="extra server flags, e.g. '--chunk-size 6'")
    parser.add_argument("--concurrency", type=int, default=4, help="clients speaking at once in the last phase")
    args = parser.parse_args()

    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                           "--max-frames", "400", *args.extra.split())
    with server:
        url = server.url
        health = httpx.get(url + "/health").json()

        ttfb: dict[str, float] = {}
        with httpx.Client(base_url=url, timeout=300) as client:
            for i in range(args.requests):
                body = {"text": SENTENCES[i % len(SENTENCES)], "client_id": "bench", "language": "English"}
                t0 = time.perf_counter()
                with client.stream("POST", "/tts/stream", json=body) as r:
                    first = None
                    for _ in r.iter_raw():
                        if first is None:
                            first = time.perf_counter() - t0
                    ttfb[r.headers["x-request-id"]] = first

            interrupt_ms = []
            for _ in range(args.interrupts):
                ended = threading.Event()
                got_audio = threading.Event()

                def read():
                    with httpx.Client(timeout=300) as c, c.stream(
                        "POST", url + "/tts/stream", json={"text": " ".join(SENTENCES), "client_id": "barge"}
                    ) as r:
                        for _ in r.iter_raw():
                            got_audio.set()
                    ended.set()

                reader = threading.Thread(target=read)
                reader.start()
                got_audio.wait(300)
                time.sleep(0.3)
                t0 = time.perf_counter()
                client.post("/tts/interrupt", params={"client_id": "barge"})
                ended.wait(60)
                interrupt_ms.append(1000 * (time.perf_counter() - t0))
                reader.join()

            # Several clients at once: time to first audio and the audio made per second of wall time.
            def speak_all(name: str, out: list) -> None:
                with httpx.Client(base_url=url, timeout=300) as c:
                    for text in SENTENCES[:3]:
                        t0 = time.perf_counter()
                        with c.stream("POST", "/tts/stream", json={"text": text, "client_id": name}) as r:
                            first, size = None, 0
                            for chunk in r.iter_raw():
                                first = first or time.perf_counter() - t0
                                size += len(chunk)
                        out.append((first, size))

            results: list = []
            wall = time.perf_counter()
            clients = [threading.Thread(target=speak_all, args=(f"c{i}", results)) for i in range(args.concurrency)]
            for t in clients:
                t.start()
            for t in clients:
                t.join()
            wall = time.perf_counter() - wall
            concurrent_ttfb = [first for first, _ in results]
            audio_seconds = sum(size for _, size in results) / 48000
        time.sleep(0.5)

    engine_ttfb = {}
    for line in server.logs:
        m = re.search(r"request id=(\w+) .* engine_ttfb_ms=([\d.]+)", line)
        if m:
            engine_ttfb[m.group(1)] = float(m.group(2)) / 1000
    overhead = [ttfb[i] - engine_ttfb[i] for i in ttfb if i in engine_ttfb]
    total = list(ttfb.values())
    print(f"# bench_server: {machine()}, model {health['model']['source']} ({health['model']['dtype']}), "
          f"{args.requests} sequential requests, {args.interrupts} interrupts {args.extra}")
    print("| measure | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    print(f"| TTFB (client) | {1000 * pct(total, 50):.1f} | {1000 * pct(total, 95):.1f} |")
    print(f"| engine time to first chunk | {1000 * pct(list(engine_ttfb.values()), 50):.1f} | "
          f"{1000 * pct(list(engine_ttfb.values()), 95):.1f} |")
    print(f"| server overhead (TTFB - engine) | {1000 * pct(overhead, 50):.1f} | {1000 * pct(overhead, 95):.1f} |")
    print(f"| interrupt -> body end | {pct(interrupt_ms, 50):.1f} | {pct(interrupt_ms, 95):.1f} |")
    print(f"| TTFB, {args.concurrency} clients at once | {1000 * pct(concurrent_ttfb, 50):.1f} | "
          f"{1000 * pct(concurrent_ttfb, 95):.1f} |")
    print(f"\n{args.concurrency} clients x 3 sentences: {audio_seconds:.1f} s of audio in {wall:.1f} s "
          f"({audio_seconds / wall:.2f} s of audio per second)")


if __name__ == "__main__":
    main()
