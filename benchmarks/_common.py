"""Shared bits of the benchmark scripts: checkpoint choice, percentiles, machine description."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_model_args(parser: argparse.ArgumentParser, default_kind: str = "custom_voice") -> None:
    parser.add_argument("--model-path", help="checkpoint dir; default: the tiny checkpoint (built once)")
    parser.add_argument("--kind", default=default_kind, choices=("base", "custom_voice", "voice_design"),
                        help="family of the default tiny checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")


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
