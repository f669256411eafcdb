"""TalkerRunner step time at batch 1, 2, 4, next to today's generation path (HF `generate` around the talker,
lean code predictor) on the same requests.

    python benchmarks/bench_runner.py [--model-path DIR --device cuda] [--frames 50] [--runs 3] [--batches 1,2,4]
                                      [--max-len 256] [--threads 1] [--mixed-sampling] [--compile]
                                      [--noise-draws token,block]

The runner runs in both cache layouts (kv.py): dynamic, and static with `--max-len` positions per row (the step
of static_step.py, eager); on CUDA also static with the step captured as CUDA graphs (one per batch-size
bucket, captured on the first step, which the median leaves out); with `--compile` also static with the step
through torch.compile (inductor; compiled in the untimed warm-up run). `--mixed-sampling` gives every other row
settings of its own (temperature, top-k, top-p), to show what per-row sampling costs. `--noise-draws` runs each
layout with rows drawing their sampling noise a call per token (the library's calls) and/or in blocks of steps.
Both paths make codes only (no PCM decode). "frames/s" counts frames of all rows together per second of
generation. For the runner it is reported twice: steps only, and with the rows' prefills included, which is
what today's path always includes. On a shared CPU the figures are indicative only."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import add_model_args, comma_list, machine, median, model_path  # noqa: E402

TEXTS = [
    "Streaming speech synthesis should start talking almost at once.",
    "A second sentence, of about the same length as the first one.",
    "The third row speaks while the others are still speaking.",
    "And a fourth, so that a batch of four has four different prompts.",
]


class _Sink:
    def __init__(self, cap: int):
        self.frames, self.cap = 0, cap

    @property
    def stopped(self) -> bool:
        return self.frames >= self.cap

    def on_frame(self, codes) -> None:
        self.frames += 1

    def on_eos(self) -> None:
        self.frames = self.cap

    def on_error(self, error) -> None:
        raise error

    def on_stopped(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--max-len", type=int, default=256, help="positions per row of the static layout")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--mixed-sampling", action="store_true", help="odd rows sample with settings of their own")
    parser.add_argument("--compile", action="store_true", help="also the static step through torch.compile (inductor)")
    parser.add_argument("--noise-draws", default="token", type=comma_list("token", "block"),
                        help="token, block or both (comma-separated)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from qwen_stream.generation import SynthesisRequest, Voice, generate_streaming
    from qwen_stream.model import load_model
    from qwen_stream.runner import NewRow, TalkerRunner
    from qwen_stream.settings import NOISE_BLOCK, ModelSettings, SamplingSettings

    model = load_model(ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype))
    if model.family != "custom_voice":
        raise SystemExit("bench_runner speaks built-in speakers: use a CustomVoice checkpoint")
    speakers = model.speakers
    sampling = SamplingSettings()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    own = SamplingSettings(temperature=0.7, top_k=30, top_p=0.9, subtalker_top_k=20) if args.mixed_sampling else None

    def requests(batch: int, mixed: bool = False) -> list[SynthesisRequest]:
        return [
            SynthesisRequest(
                TEXTS[i % len(TEXTS)],
                "English",
                Voice(speaker=speakers[i % len(speakers)]),
                seed=i,
                sampling=own if mixed and i % 2 else None,
            )
            for i in range(batch)
        ]

    def runner_run(runner: TalkerRunner, batch: int) -> tuple[float, float, float, float]:
        """Seconds: prefill of all rows, then median step, code predictor, talker per step."""
        sync()
        t0 = time.perf_counter()
        admitted = runner.prefill([NewRow(r, max_frames=args.frames) for r in requests(batch, own is not None)])
        sync()
        prefill = time.perf_counter() - t0
        if any(a.error for a in admitted):
            raise SystemExit(f"prefill failed: {[a.error for a in admitted]}")
        totals, predictor, talker = [], [], []
        while runner.live_rows:
            timings = runner.step().timings
            totals.append(timings.total_s)
            predictor.append(timings.code_predictor_s)
            talker.append(timings.talker_s)
        return prefill, median(totals), median(predictor), median(talker)

    def today_run(batch: int) -> float:
        sinks = [_Sink(args.frames) for _ in range(batch)]
        sync()
        t0 = time.perf_counter()
        generate_streaming(model, requests(batch), sinks, sampling, max_new_frames=args.frames)
        sync()
        return time.perf_counter() - t0

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        today_run(batch)  # warm-up
        today = batch * args.frames / median([today_run(batch) for _ in range(args.runs)])
        cuda = model.device.type == "cuda"
        layouts = [("dynamic", None, False, None), (f"static {args.max_len}", args.max_len, False, None)]
        if cuda:
            layouts.append((f"static {args.max_len} + CUDA graphs", args.max_len, True, None))
        if args.compile:
            layouts.append((f"static {args.max_len} + torch.compile", args.max_len, False, "inductor"))
            if cuda:
                layouts.append((f"static {args.max_len} + torch.compile + CUDA graphs", args.max_len, True, "inductor"))
        noise = {"token": 0, "block": NOISE_BLOCK}
        for (layout, max_len, graphs, backend), draws in (
            (layout, draws) for layout in layouts for draws in args.noise_draws.split(",")
        ):
            # One runner per layout, reused: its steps are built (captured, compiled) once, in the warm-up run.
            runner = TalkerRunner(
                model,
                sampling,
                max_batch=batch,
                max_len=max_len,
                cuda_graphs=graphs,
                compile_backend=backend,
                noise_block=noise[draws],
            )
            if "," in args.noise_draws:
                layout = f"{layout}, noise {'blocks' if noise[draws] else 'per token'}"
            runner_run(runner, batch)  # warm-up
            runs = [runner_run(runner, batch) for _ in range(args.runs)]
            prefill, step, predictor, talker = (median([r[i] for r in runs]) for i in range(4))
            with_prefill = batch * args.frames / (prefill + step * args.frames)
            rows.append((batch, layout, step, predictor, talker, prefill / batch, batch / step, with_prefill, today))

    print(
        f"# bench_runner: {machine()}, threads {torch.get_num_threads()}, model {model.source} "
        f"({model.placement.dtype}, {model.placement.attention}), {args.frames} frames per row, "
        f"median of {args.runs} runs" + (", odd rows with sampling of their own" if own is not None else "")
    )
    print(
        "| batch | layout | runner ms/step | code predictor ms | talker ms | prefill ms/row | runner frames/s "
        "| runner frames/s incl. prefill | today's path frames/s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for batch, layout, step, predictor, talker, prefill, fps, fps_all, today in rows:
        print(
            f"| {batch} | {layout} | {1000 * step:.1f} | {1000 * predictor:.1f} | {1000 * talker:.1f} "
            f"| {1000 * prefill:.1f} | {fps:.0f} | {fps_all:.0f} | {today:.0f} |"
        )


if __name__ == "__main__":
    main()
