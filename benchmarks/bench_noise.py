"""What drawing a step's sampling noise costs the host, per token (`--noise-draws token`, the library's calls)
against in blocks of steps (`--noise-draws block`, sampling.NoiseBlocks), by batch size.

    python benchmarks/bench_noise.py [--device cuda] [--batches 1,8,32] [--steps 64] [--threads 1]

No checkpoint: the real model's sizes (15 code-predictor tokens over 2,048 codes, then the talker's 3,072), every
row sampling both parts from a generator of its own, rows joined at different steps (so their blocks run out at
different steps, as in a server). Per step: milliseconds to fill the step's noise (the device synchronized after
each step, as the runner's step does: median, mean, and the worst step, where rows draw their next blocks), and
the torch ops dispatched (views included; the rest are kernel launches on a GPU). In a captured step this work
stays outside the graph: the host pays it before every replay."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import machine, median  # noqa: E402
from benchmarks._dispatch import Dispatched  # noqa: E402

PREDICTOR_VOCAB, PREDICTOR_STEPS, TALKER_VOCAB = 2048, 15, 3072


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--steps", type=int, default=64, help="steps timed per batch and mode (4 blocks of 16)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from qwen_stream.sampling import BlockRow, NoiseBlocks, StepNoise, TalkerSampling, noise_width
    from qwen_stream.settings import NOISE_BLOCK

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    shape = (PREDICTOR_VOCAB, PREDICTOR_STEPS, TALKER_VOCAB)
    sampling = TalkerSampling(True, None, None, None, None, 0, 0, (), True, None, None, None)

    def run(batch: int, block: int) -> tuple[float, float, float, float]:
        """ms per step (median, mean, max) and torch ops per step over `args.steps` steps, after as many
        untimed; the ops are counted in a run of their own (counting slows every call)."""
        noise = StepNoise(batch, *shape, device)
        blocks = NoiseBlocks(batch, block, noise_width(*shape), device) if block else None
        generators = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
        offsets = [i * 5 for i in range(batch)]  # rows that joined at different steps

        def fill(step: int) -> None:
            if blocks is None:
                noise.fill(generators, [sampling] * batch)
            else:
                blocks.fill(noise, [BlockRow(generators[i], sampling, i, step + offsets[i]) for i in range(batch)])

        times = []
        for step in range(2 * args.steps):
            sync()
            start = time.perf_counter()
            fill(step)
            sync()
            if step >= args.steps:
                times.append(time.perf_counter() - start)
        counter = Dispatched()
        with counter:
            for step in range(2 * args.steps, 3 * args.steps):
                fill(step)
        ms = [1000 * t for t in times]
        return median(ms), sum(ms) / len(ms), max(ms), counter.count / args.steps

    print(
        f"# bench_noise: {machine()}, device {device}, threads {torch.get_num_threads()}, "
        f"{args.steps} steps per row, blocks of {NOISE_BLOCK} steps"
    )
    print("| rows | draws | ms/step median | mean | max | torch ops/step |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        for label, block in (("per token", 0), (f"blocks of {NOISE_BLOCK}", NOISE_BLOCK)):
            mid, mean, worst, ops = run(batch, block)
            print(f"| {batch} | {label} | {mid:.2f} | {mean:.2f} | {worst:.2f} | {ops:.1f} |")


if __name__ == "__main__":
    main()
