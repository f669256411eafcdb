"""Rows joining at once: the runner's prefill of G rows together against one by one.

    python benchmarks/bench_prefill.py [--model-path DIR --device cuda] [--groups 1,4,16,32] [--runs 3]

For each G, G utterances with prompts of different lengths join an empty runner (static layout, as CUDA graphs
use) in one `prefill` call: once as one group (the server's way since batched prefill), once with the group
size forced to one row (`PREFILL_TOKENS` = 1: each row its own forward, first token and KV copies, which is
what the engine did before), and once as one group through the static prefill's buckets (static_prefill.py:
captured as CUDA graphs on a GPU, as the server does at warm-up; eager over fixed buffers on CPU). Reported:
milliseconds for all G rows, per row, and torch operators dispatched per row (on a GPU nearly every one is a
kernel launch, whose host cost is what an eager prefill spends there; views and metadata are counted too, so
the figure is an upper bound on launches; a graph's replay dispatches none). The prompt building (the library's
`capture_prompt`, per row either way) is counted apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_model_args, machine, median, model_path  # noqa: E402

TEXTS = [
    "Hi.",
    "Streaming speech synthesis should start talking almost at once.",
    "A longer sentence, so that the prompts in one group have lengths of their own and the padding shows.",
    "Numbers like 42 and dates like today are read out.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--groups", default="1,4,16,32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=512, help="positions per row of the static layout")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from benchmarks._dispatch import Dispatched

    if args.threads:
        torch.set_num_threads(args.threads)
    from qwen_stream import runner as runner_module
    from qwen_stream.generation import SynthesisRequest, Voice
    from qwen_stream.model import load_model
    from qwen_stream.prompts import capture_prompt
    from qwen_stream.runner import NewRow, TalkerRunner
    from qwen_stream.settings import ModelSettings, SamplingSettings

    model = load_model(ModelSettings(path=model_path(args), device=args.device, dtype=args.dtype))
    if model.family != "custom_voice":
        raise SystemExit("bench_prefill speaks built-in speakers: use a CustomVoice checkpoint")
    sampling = SamplingSettings()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    groups = [int(g) for g in args.groups.split(",")]

    def rows(count: int) -> list[NewRow]:
        speakers = model.speakers
        return [
            NewRow(SynthesisRequest(TEXTS[i % len(TEXTS)], "English", Voice(speaker=speakers[i % len(speakers)]), seed=i))
            for i in range(count)
        ]

    builder = TalkerRunner(model, sampling, max_batch=max(groups), max_len=args.max_len)
    captured = model.device.type == "cuda"
    try:
        builder.build_prefills(capture=captured)  # once: every runner below shares them
    except Exception as error:  # the other rows still say something
        print(f"# capturing the prefill failed ({type(error).__name__}: {error}); bucketed rows run eagerly")
        captured = False
        builder.build_prefills(capture=False)
    assert builder.prefill_graphs is not None

    def prefill(count: int, budget: int, counting: bool, bucketed: bool = False) -> tuple[float, int]:
        runner_module.PREFILL_TOKENS = budget
        runner = TalkerRunner(model, sampling, max_batch=max(groups), max_len=args.max_len)
        runner.prefill_graphs = builder.prefill_graphs if bucketed else None
        joining = rows(count)
        sync()
        start = time.perf_counter()
        if counting:
            with Dispatched() as dispatched:
                runner.prefill(joining)
        else:
            runner.prefill(joining)
        sync()
        return time.perf_counter() - start, dispatched.count if counting else 0

    default_budget = runner_module.PREFILL_TOKENS
    with torch.inference_mode(), Dispatched() as prompt_ops:
        capture_prompt(model, rows(1)[0].request, sampling)
    table = []
    for count in groups:
        for label, budget, bucketed in (
            ("together", default_budget, False),
            ("one by one", 1, False),
            ("together, bucketed" + (" (CUDA graphs)" if captured else ""), default_budget, True),
        ):
            prefill(count, budget, False, bucketed)  # warm: kernels chosen, allocator filled
            seconds = median([prefill(count, budget, False, bucketed)[0] for _ in range(args.runs)])
            _, ops = prefill(count, budget, True, bucketed)
            table.append((count, label, seconds, ops))
    runner_module.PREFILL_TOKENS = default_budget

    print(
        f"# bench_prefill: {machine()}, model {model.source} ({model.placement.dtype}, {model.placement.attention}), "
        f"static layout {args.max_len}, median of {args.runs}; capture_prompt alone: {prompt_ops.count} ops per row"
    )
    print("| rows joining | prefilled | ms for all | ms per row | ops dispatched per row |")
    print("|---:|---|---:|---:|---:|")
    for count, label, seconds, ops in table:
        print(f"| {count} | {label} | {1000 * seconds:.1f} | {1000 * seconds / count:.2f} | {ops / count:.0f} |")


if __name__ == "__main__":
    main()
