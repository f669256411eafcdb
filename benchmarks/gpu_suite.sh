#!/usr/bin/env bash
# The GPU benchmark suite, for the device machine (one call of the `device` tool's run):
#   run: bash benchmarks/gpu_suite.sh        carry: [".whl"]   (prepare .whl here first: benchmarks/gpu_wheels.sh)
# Builds real-size random checkpoints there (they cost what the real ones cost to run; gigabytes, so never
# carried), then runs the engine and decoder benchmarks on the GPU. Every output lands in $OUT (or ./gpu-out
# when $OUT is unset) as one file per benchmark, plus the machine's description. Sized for a few minutes.
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
  > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

step() {  # step NAME COMMAND...: one benchmark, its output in $out/NAME.txt, its time on the console
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$out/$name.txt" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s"; tail -n 25 "$out/$name.txt"
}

for size in 0.6b 1.7b; do
  step "build-$size" python3 -m qwen_stream.tiny "/tmp/cv-$size" --kind custom_voice --size "$size" --force
  step "engine-$size" python3 benchmarks/bench_engine.py --model-path "/tmp/cv-$size" --device cuda \
    --frames 200 --runs 5
done
step decoder-1.7b python3 benchmarks/bench_decoder.py --model-path /tmp/cv-1.7b --device cuda
step runner-1.7b python3 benchmarks/bench_runner.py --model-path /tmp/cv-1.7b --device cuda --frames 60 --runs 2 \
  --batches 1,4,16,32 --max-len 512
# Concurrent utterances on the continuous engine (the server's stack is not in the GPU image): first audio at
# c = 1, 4, 10, 32 and audio seconds per wall second, eager static step against captured CUDA graphs.
step concurrency-1.7b python3 benchmarks/bench_concurrency.py --model-path /tmp/cv-1.7b --device cuda \
  --concurrency 1,4,10,32 --frames 60 --cuda-graphs off,on --static-len 640
# Last, so that the figures above are in $OUT even if the time runs out here: torch.compile (inductor) on the
# static step, alone and under CUDA graphs, at batch 1 and 32 (each compiles per batch: minutes in all).
step runner-compile-1.7b python3 benchmarks/bench_runner.py --model-path /tmp/cv-1.7b --device cuda --frames 60 \
  --runs 2 --batches 1,32 --max-len 512 --compile
