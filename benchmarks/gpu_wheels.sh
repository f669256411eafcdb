#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a GPU call: fetches, as wheels for the GPU image's Python 3.12, what
# the engine needs beyond that image (its transformers and tokenizers are too new for qwen-tts 0.1.1, and
# qwen-tts, librosa, soundfile and cffi are absent). They travel in .whl (git-ignored through .git/info/exclude).
# The server's own stack (FastAPI, PyAV, WeTextProcessing/pynini: too large to carry) is not fetched: the
# GPU suite measures the model-bound parts (engine, decoder), which is what the GPU changes.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
wheels=(
  qwen-tts==0.1.1 transformers==4.57.3 tokenizers==0.22.2 huggingface-hub==0.36.2
  librosa==0.11.0 audioread==3.1.0 soxr==1.1.0 pooch==1.9.0 decorator==5.2.1 soundfile==0.14.0 sox==1.4.1
  cffi==2.0.0 pycparser==2.23  # soundfile loads libsndfile through cffi, which the image lacks
  platformdirs==4.14.8
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${wheels[@]}"
ls -l .whl
du -sh .whl
