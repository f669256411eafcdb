"""Time to first byte of POST /v1/audio/speech per response format, against raw PCM.

    python benchmarks/bench_formats.py [--model-path DIR --device cuda] [--rounds 20] [--extra '--threads 1']

Starts `server.py` as a child process on a free loopback port (`--max-frames 40`: 3.2 s per request). Each
round sends the same sentence once per case, in a shuffled order, and reads each body to its end before the
next request, so no request shares the engine with another. TTFB is measured by the client, from sending
the request to the first body byte; the first byte of every encoded format carries audio (container headers
go out with the first packet).
"vs pcm" is the median over rounds of (TTFB of the format - TTFB of pcm in the same round): paired, so the
engine's own round-to-round variation cancels."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from benchmarks._common import ServerProcess, add_model_args, machine, median, model_path, pct  # noqa: E402

SENTENCE = "Hello! How can I help you today?"
CASES = [("pcm", 1.0), ("wav", 1.0), ("mp3", 1.0), ("opus", 1.0), ("aac", 1.0), ("flac", 1.0),
         ("pcm", 2.0), ("mp3", 2.0)]


def first_byte(client: httpx.Client, fmt: str, speed: float) -> float:
    body = {"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": fmt, "speed": speed,
            "language": "English", "user": "bench"}
    first = None
    t0 = time.perf_counter()
    with client.stream("POST", "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError(f"{fmt}: empty body")
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--extra", default="", help="extra server flags, e.g. '--threads 1'")
    args = parser.parse_args()

    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                           "--max-frames", "40", *args.extra.split())
    ttfb: dict[tuple[str, float], list[float]] = {case: [] for case in CASES}
    with server, httpx.Client(base_url=server.url, timeout=300) as client:
        health = client.get("/health").json()
        for case in CASES:  # warm every encoder once
            first_byte(client, *case)
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            order = list(CASES)
            shuffle(order)
            for case in order:
                ttfb[case].append(first_byte(client, *case))

    pcm = ttfb[("pcm", 1.0)]
    print(f"# bench_formats: {machine()}, model {health['model']['source']} ({health['model']['dtype']}), "
          f"{args.rounds} rounds {args.extra}")
    print("| format | speed | TTFB p50 ms | TTFB p95 ms | vs pcm p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for (fmt, speed), values in ttfb.items():
        delta = median([v - p for v, p in zip(values, pcm)])
        print(f"| {fmt} | {speed:g} | {1000 * pct(values, 50):.1f} | {1000 * pct(values, 95):.1f} | "
              f"{1000 * delta:+.1f} |")


if __name__ == "__main__":
    main()
