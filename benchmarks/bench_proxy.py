"""The proxy hop and two replicas: first audio direct vs through deploy/nginx/nginx.conf (same run), and the
aggregate throughput of two replicas against one behind the proxy.

Needs Debian's nginx. On a 2-core CPU machine two replicas cannot be faster than one (they share the cores);
the figure keeps the routing honest, the gain is for machines with a GPU (or cores) per replica.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, ServerProcess, add_model_args, free_port, machine, model_path, pct  # noqa: E402

TEXT = "Sure, here is the answer you asked for."


def first_audio(port: int, client_id: str) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/tts/stream", body=json.dumps({"text": TEXT, "client_id": client_id, "voice": "Ryan"}),
                     headers={"Content-Type": "application/json", "X-Client-Id": client_id})
        response = conn.getresponse()
        response.read(1)
        first = time.perf_counter() - t0
        response.read()
    finally:
        conn.close()
    return first


def audio_seconds(port: int, client_id: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/tts/stream", body=json.dumps({"text": TEXT, "client_id": client_id, "voice": "Ryan"}),
                     headers={"Content-Type": "application/json", "X-Client-Id": client_id})
        return len(conn.getresponse().read()) / 48_000
    finally:
        conn.close()


class Nginx:
    def __init__(self, replica_ports: list[int]):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in replica_ports)
        conf = conf.replace("        server replica1:9000 max_fails=1 fail_timeout=10s;\n"
                            "        server replica2:9000 max_fails=1 fail_timeout=10s;", servers)
        self.port = free_port()
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (self.dir / "logs").mkdir()
        (self.dir / "nginx.conf").write_text(conf)

    def __enter__(self) -> "Nginx":
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-g",
                                      f"daemon off; pid {self.dir}/nginx.pid; error_log {self.dir}/logs/error.log;"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def throughput(port: int, clients: int, rounds: int) -> float:
    """Audio seconds per wall second with `clients` conversations speaking `rounds` sentences each."""
    total = [0.0] * clients

    def talk(i: int) -> None:
        for _ in range(rounds):
            total[i] += audio_seconds(port, f"conv-{i}")

    started = time.perf_counter()
    threads = [threading.Thread(target=talk, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra", default="--threads 1", help="extra server flags")
    args = parser.parse_args()
    flags = ["--model-path", model_path(args), "--device", args.device, "--max-frames", "60", *args.extra.split()]
    with ServerProcess(*flags) as one, ServerProcess(*flags) as two:
        first_audio(one.port, "warm")
        first_audio(two.port, "warm")
        with Nginx([one.port]) as single, Nginx([one.port, two.port]) as pair:
            direct, proxied = [], []
            for i in range(args.runs):  # interleaved, so both see the same load
                direct.append(first_audio(one.port, f"d{i}"))
                proxied.append(first_audio(single.port, f"d{i}"))
            one_replica = throughput(single.port, args.clients, args.rounds)
            two_replicas = throughput(pair.port, args.clients, args.rounds)

    def ms(values: list[float], q: float) -> str:
        return f"{1000 * pct(values, q):.1f}"

    print(f"# bench_proxy: {machine()}, {args.runs} runs, {args.clients} conversations x {args.rounds} sentences, "
          f"{args.extra}")
    print("| path | first audio p50 ms | p95 ms |")
    print("|---|---:|---:|")
    print(f"| direct | {ms(direct, 50)} | {ms(direct, 95)} |")
    print(f"| through nginx | {ms(proxied, 50)} | {ms(proxied, 95)} |")
    print(f"\nthroughput behind nginx: 1 replica {one_replica:.2f} audio-s/s, 2 replicas {two_replicas:.2f} audio-s/s")


if __name__ == "__main__":
    main()
