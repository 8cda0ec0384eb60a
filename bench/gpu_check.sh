#!/usr/bin/env bash
# The GPU check of issue #17, prepared to run once on a device machine in under 8 minutes: the `gpu` tests, then
# bench/gpu_train.py (1B Llama, seq 2048, bf16, megalang vs HF Trainer), then bench/qlora_gpu.py. Every result and
# log lands in $OUT (default ./gpu-results); a failing stage is recorded and the next one still runs.
#
# The device machine has torch 2.11 and most dependencies but no network. Stage the rest here first
# (bench/gpu_stage.sh), then two device calls, back to back (the machine stays warm ~30 s between them):
#   1. carry [".gpu/model-a"], command: mkdir -p /root/megalang-stage && cp .gpu/model-a/* /root/megalang-stage/
#   2. carry [".gpu/site", ".gpu/model-b"], command: bash bench/gpu_check.sh
# Without the model halves the QLoRA test and bench skip and say so; everything else runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
# The staged packages (CPython 3.12) where the machine lacks them: PYTHONPATH would put them before its own.
if [ -d .gpu/site ] && ! "$PY" -c 'import pydantic' 2>/dev/null; then export PYTHONPATH="$PYTHONPATH:$PWD/.gpu/site"; fi

# SmolLM2 from its two halves (bench/gpu_stage.sh), checked against the original's SHA-256.
part_a=$(ls .gpu/model-a/smollm2.part-a /root/megalang-stage/smollm2.part-a 2>/dev/null | head -1)
if [ -n "$part_a" ] && [ -f .gpu/model-b/smollm2.part-b ]; then
  gguf=/tmp/megalang-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  mkdir -p "$(dirname "$gguf")" && cat "$part_a" .gpu/model-b/smollm2.part-b > "$gguf"
  if [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$(cat .gpu/model-b/smollm2.sha256)" ]; then
    export MEGALANG_SMOLLM2=$gguf
  else
    echo "SmolLM2 halves do not match the staged SHA-256; QLoRA will skip" | tee "$OUT/stage-error.txt"
  fi
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the exit code
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" | tee -a "$OUT/stages.jsonl"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
"cuda", torch.version.cuda, torch.cuda.get_device_name())'; } > "$OUT/device.txt" 2>&1
# Three workers: the kill/resume tests spend most of their time starting subprocesses, not on the GPU.
stage gpu-tests 220 "$PY" -m pytest -m gpu tests/gpu -q -n 3 -p no:cacheprovider -rA --junitxml="$OUT/gpu-tests.xml"
stage gpu-train 200 "$PY" bench/gpu_train.py --steps 30 --repeats 1
stage qlora-gpu 50 "$PY" bench/qlora_gpu.py --steps 20
cat "$OUT/stages.jsonl"
tail -n 1 "$OUT/gpu-train.log" "$OUT/qlora-gpu.log"  # each bench's JSON line
