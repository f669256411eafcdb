"""Live first audio beside a long-form job, and the job's throughput.

One server (tiny checkpoint unless --model-path): first, live requests alone (one client, a sentence at a
time, a pause between them); then the same live requests while a long job runs; then the job alone to its end.
Reports live first-audio p50/p95/max without and with the job (same run), and the job's audio seconds per wall
second. Live speech must come first: the job only uses the engine while no live utterance runs or waits.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402

LIVE = "Sure, here is the answer you asked for."


def live_first_audio(port: int) -> float:
    """Seconds from the request to its first body byte (a fresh connection: no keep-alive cost)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/tts/stream", body=json.dumps({"text": LIVE, "client_id": "live", "voice": "Ryan"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"/tts/stream answered {response.status}: {response.read()[:300]!r}")
        response.read(1)
        first = time.perf_counter() - t0
        response.read()  # play it out: the next live request comes after this one, as a conversation's does
    finally:
        conn.close()
    return first


def live_series(port: int, runs: int, pause: float) -> list[float]:
    values = []
    for _ in range(runs):
        values.append(live_first_audio(port))
        time.sleep(pause)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--runs", type=int, default=15, help="live requests per phase")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between live requests")
    parser.add_argument("--segments", type=int, default=60, help="segments of the long job")
    parser.add_argument("--max-frames", type=int, default=60, help="frame cap per sentence (server flag)")
    parser.add_argument("--extra", default="", help="extra server flags, e.g. '--threads 1'")
    args = parser.parse_args()

    job = {"segments": [{"text": f"This is paragraph {i} of a long audiobook chapter.", "voice": "Ryan"}
                        for i in range(args.segments)], "output_format": "wav", "pause_ms": 200}
    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                           "--max-frames", str(args.max_frames), *args.extra.split())
    load_before = os.getloadavg()
    with server, httpx.Client(base_url=server.url, timeout=600) as client:
        health = client.get("/health").json()
        live_first_audio(server.port)  # warm-up
        alone = live_series(server.port, args.runs, args.pause)
        started = time.perf_counter()
        answer = client.post("/v1/audio/jobs", json=job)
        if answer.status_code != 202:
            raise SystemExit(f"the job was refused: {answer.text}")
        job_id = answer.json()["id"]
        while client.get(f"/v1/audio/jobs/{job_id}").json()["status"] == "queued":
            time.sleep(0.05)
        beside = live_series(server.port, args.runs, args.pause)
        while (status := client.get(f"/v1/audio/jobs/{job_id}").json())["status"] in ("queued", "running"):
            time.sleep(0.2)
        wall = time.perf_counter() - started
    load_after = os.getloadavg()
    if status["status"] != "done":
        raise SystemExit(f"the job ended {status['status']}: {status.get('error')}")
    audio = status["progress"]["audio_seconds_done"]

    def ms(values: list[float], q: float) -> str:
        return f"{1000 * pct(values, q):.0f}"

    print(f"# bench_jobs: {machine()}, model {health['model']['source']}, {args.runs} live requests per phase, "
          f"job of {args.segments} segments, --max-frames {args.max_frames} {args.extra}")
    print(f"# load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print("| live first audio | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, values in (("alone", alone), ("beside a running job", beside)):
        print(f"| {name} | {ms(values, 50)} | {ms(values, 95)} | {ms(values, 100)} |")
    print(f"\njob: {audio:.1f} s of audio in {wall:.1f} s wall ({audio / wall:.2f} audio-s/s, live requests included)")


if __name__ == "__main__":
    main()
