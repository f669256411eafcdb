#!/usr/bin/env bash
# The GPU benchmark suite, for the device machine (one call of the `device` tool's run):
#   run: bash benchmarks/gpu_suite.sh
#   carry: [".whl", ".pytest_cache/qwen-stream/custom_voice-tiny"]
#   (prepare .whl here first with benchmarks/gpu_wheels.sh; the tiny checkpoint is the test suite's own)
# First the CUDA-only tests (the captured-graph path runs nowhere else), then real-size random checkpoints
# (they cost what the real ones cost to run; gigabytes, so built there, never carried) through the engine,
# runner, concurrency and decoder benchmarks. Most telling first, so that a run cut short still has it.
# Outputs land in $OUT (or ./gpu-out when $OUT is unset), one file per kind of result: the device tool brings
# back at most 8 files, and whatever is there when a run is cut short. A second call can take up where a cut one
# stopped: GPU_SUITE_SKIP="cuda-tests concurrency-1.7b ..." skips the steps it names (the checkpoint builds
# are needed again on a fresh machine).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, transformers, sys;
print(sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  > "$out/setup.txt" 2>&1
cat "$out/setup.txt"

step() {  # step FILE NAME COMMAND...: one benchmark appended to $out/FILE.txt under a header; time on the console
  local file=$1 name=$2; shift 2
  case " ${GPU_SUITE_SKIP:-} " in *" $name "*) echo "$name: skipped (GPU_SUITE_SKIP)"; return 0 ;; esac
  local t0=$SECONDS
  echo "=== $name: $*" >> "$out/$file.txt"
  "$@" >> "$out/$file.txt" 2>&1
  local rc=$?
  echo "=== $name: exit $rc in $((SECONDS - t0)) s" >> "$out/$file.txt"
  echo "$name: exit $rc in $((SECONDS - t0)) s"; tail -n 20 "$out/$file.txt"
}

step cuda-tests cuda-tests timeout 240 python3 -m pytest -q -p no:cacheprovider -k "on_cuda" \
  tests/engine/test_runner.py tests/engine/test_static_step.py tests/engine/test_captured_decode.py \
  tests/engine/test_static_prefill.py
# The host's cost of a step's sampling noise, per token (16 launches per row) against blocks of 16 steps per call
# (--noise-draws block, the default on CUDA since 2026-11-29): seconds, no checkpoint. Into runner.txt: the device
# tool brings back 8 files at most.
step runner noise python3 benchmarks/bench_noise.py --device cuda --batches 1,8,32
step setup build-1.7b python3 -m qwen_stream.tiny /tmp/cv-1.7b --kind custom_voice --size 1.7b --force
[ -d /tmp/cv-1.7b ] || { echo "no 1.7B checkpoint: stopping here (setup.txt says why)"; exit 1; }
# Concurrent utterances on the continuous engine (the server's stack is not in the GPU image): first audio at
# c = 1, 4, 10, 32 and audio seconds per wall second, eager static step against captured CUDA graphs (the step
# and, since 2026-11-29, the prefill and the carried chunk decode). `auto`, not `on`: a kind whose capture fails
# runs eagerly (logged) and the table's "ran as" column says which ran, rather than the whole run failing.
step concurrency concurrency-1.7b python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b --device cuda \
  --concurrency 1,4,10,32 --frames 60 --cuda-graphs off,auto --static-len 640
# The same with CUDA graphs, chunks decoded the earlier way (a 72-frame window again per chunk): what the carried
# decode changes on a GPU, where a decode was launch-bound (2026-11-28).
step concurrency concurrency-1.7b-window python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b \
  --device cuda --concurrency 1,10 --frames 60 --cuda-graphs auto --static-len 640 --decode window
# Per-token noise draws (the library's calls): what blocks of draws change at c = 1 and 32.
step concurrency concurrency-1.7b-noise-token python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b \
  --device cuda --concurrency 1,32 --frames 60 --cuda-graphs auto --static-len 640 --noise-draws token
# The carried decode with the step's graphs only (the chunk decode eager): what capturing the decode changes.
step concurrency concurrency-1.7b-decode-eager python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b \
  --device cuda --concurrency 1,10 --frames 60 --cuda-graphs auto --static-len 640 --decode-graphs off
# c = 1 with the step compiled (inductor) under its CUDA graph: the one bucket of --max-batch 1 compiles (minutes
# for 1.7B), then the first audio a single caller gets from the most fused step, the 60 ms target's best chance.
# Bounded at 300 s, so that a compile slower than thought cannot take the rest of the call with it.
step concurrency concurrency-1.7b-compile timeout 300 python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b \
  --device cuda --concurrency 1 --frames 60 --cuda-graphs auto --torch-compile on --static-len 640
# Rows joining at once: one prefill forward for the group against one per row, and the group through the captured
# prefill buckets (ms and operators per row).
step prefill prefill-1.7b python3 benchmarks/bench_prefill.py --model-path /tmp/cv-1.7b --device cuda --groups 1,4,16,32
# The chunk decode per chunk, eager and captured, and one batched chunk at 1, 8 and 32 rows.
step decoder decoder-1.7b python3 benchmarks/bench_decoder.py --model-path /tmp/cv-1.7b --device cuda \
  --contexts carried,graphs,72 --chunks 1,4 --rows 1,8,32
step setup build-0.6b python3 -m qwen_stream.tiny /tmp/cv-0.6b --kind custom_voice --size 0.6b --force
step concurrency concurrency-0.6b python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-0.6b --device cuda \
  --concurrency 1,4,10,32 --frames 60 --cuda-graphs off,auto --static-len 640
# 30 frames: an eager step of 1.7B costs ~100 ms there (launch-bound), and the runner times three layouts and
# today's path at four batch sizes (60 frames x 2 runs took 315 s on 2026-11-28).
step runner runner-1.7b python3 benchmarks/bench_runner.py --model-path /tmp/cv-1.7b --device cuda --frames 30 \
  --runs 2 --batches 1,4,16,32 --max-len 512 --noise-draws token,block
step engine engine-1.7b python3 benchmarks/bench_engine.py --model-path /tmp/cv-1.7b --device cuda --frames 100 --runs 3
# Playback gaps the engine makes at 16 conversations, chunks sent early or on the schedule only (each engine
# captures its graphs first).
step concurrency playback-1.7b python3 benchmarks/bench_playback.py --model-path /tmp/cv-1.7b --device cuda \
  --clients 16 --reps 1 --turns 2 --max-batch 32
# Last: torch.compile (inductor) on the static step, alone and under CUDA graphs, at batch 1 and 32 (each
# compiles per batch: minutes in all).
step runner-compile runner-compile-1.7b python3 benchmarks/bench_runner.py --model-path /tmp/cv-1.7b --device cuda \
  --frames 60 --runs 2 --batches 1,32 --max-len 512 --compile
