"""Voice cloning costs over real HTTP: prompt creation (POST /v1/voices) and time to first audio with a
stored voice vs a fresh upload (legacy base64 `ref_audio`, never seen before, so its prompt is built
inside the request).

    python benchmarks/bench_voices.py [--model-path BASE_DIR --device cuda] [--runs 10]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from benchmarks._common import ROOT, ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402


def reference(seed: int, seconds: float = 5.0, rate: int = 24000) -> bytes:
    """A voiced-like test signal; a different seed gives different audio (no cache hit)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = rng.uniform(100, 220) + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2 + 0.01 * rng.standard_normal(len(t))
    out = io.BytesIO()
    sf.write(out, wave.astype(np.float32), rate, format="WAV")
    return out.getvalue()


def first_audio(client: httpx.Client, body: dict) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", "/tts/stream", json=body) as r:
        r.raise_for_status()
        first = None
        for _ in r.iter_raw():
            if first is None:
                first = time.perf_counter() - t0
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, default_kind="base")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    voices_dir = ROOT / ".pytest_cache" / "bench-voices"
    server = ServerProcess("--models", f"base={model_path(args)}", "--device", args.device, "--dtype", args.dtype,
                           "--voices-dir", str(voices_dir), "--max-frames", "60")
    with server:
        url = server.url
        with httpx.Client(base_url=url, timeout=300) as client:
            create = {"xvector": [], "icl": []}
            ids = []
            for i in range(args.runs):
                for mode in create:
                    fields = {"name": f"bench {i}"}
                    if mode == "icl":
                        fields["transcript"] = "This is the reference recording."
                    t0 = time.perf_counter()
                    r = client.post("/v1/voices", files={"file": ("r.wav", reference(i))}, data=fields)
                    create[mode].append(time.perf_counter() - t0)
                    r.raise_for_status()
                    ids.append(r.json()["id"])
            text = "Hello, this is a cloned voice."
            stored = [first_audio(client, {"text": text, "voice": ids[i % len(ids)]}) for i in range(args.runs)]
            fresh = [first_audio(client, {"text": text, "ref_audio": base64.b64encode(reference(1000 + i)).decode()})
                     for i in range(args.runs)]
            for voice_id in ids:
                client.delete(f"/v1/voices/{voice_id}")

    print(f"# bench_voices: {machine()}, model {model_path(args)}, {args.runs} runs, 5 s references")
    print("| measure | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for mode, values in create.items():
        print(f"| POST /v1/voices ({mode}: decode, checks, prompt, store) | {1000 * pct(values, 50):.1f} | "
              f"{1000 * pct(values, 95):.1f} |")
    print(f"| first audio, stored voice | {1000 * pct(stored, 50):.1f} | {1000 * pct(stored, 95):.1f} |")
    print(f"| first audio, fresh base64 ref_audio (x-vector) | {1000 * pct(fresh, 50):.1f} | "
          f"{1000 * pct(fresh, 95):.1f} |")


if __name__ == "__main__":
    main()
