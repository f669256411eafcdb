"""Shared bits of the benchmark scripts: checkpoint choice, percentiles, machine description."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_model_args(parser: argparse.ArgumentParser, default_kind: str = "custom_voice") -> None:
    parser.add_argument("--model-path", help="checkpoint dir; default: the tiny checkpoint (built once)")
    parser.add_argument("--kind", default=default_kind, choices=("base", "custom_voice", "voice_design"),
                        help="family of the default tiny checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")


def comma_list(*allowed: str):
    """An argparse type: comma-separated values, each one of `allowed` (handed on as the string), so a typo is
    refused when the arguments are parsed, not minutes into a run."""

    def parse(text: str) -> str:
        wrong = [value for value in text.split(",") if value not in allowed]
        if wrong:
            raise argparse.ArgumentTypeError(f"{', '.join(wrong)}: not one of {', '.join(allowed)}")
        return text

    return parse


def model_path(args) -> str:
    if args.model_path:
        return args.model_path
    from qwen_stream.tiny import ensure_checkpoint

    cache = Path(os.environ.get("QWEN_STREAM_TEST_CACHE", ROOT / ".pytest_cache" / "qwen-stream"))
    return str(ensure_checkpoint(cache, args.kind))


def pct(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`server.py ARGS` on a free loopback port, ready (GET /health == 200) inside the `with` block.
    `.logs` collects its output lines (the per-request log lines carry the engine's own timings)."""

    def __init__(self, *args: str, ready_timeout: float = 600):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, str(ROOT / "server.py"), "--port", str(self.port), *args]
        self.ready_timeout = ready_timeout
        self.logs: list[str] = []

    def __enter__(self) -> "ServerProcess":
        import subprocess
        import threading
        import time

        import httpx

        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        threading.Thread(target=lambda: self.logs.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + "".join(self.logs))
            time.sleep(0.2)
        self.proc.kill()
        raise SystemExit("server did not become ready")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)
