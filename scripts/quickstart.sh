#!/usr/bin/env bash
# The whole llmprod pipeline on the bundled tiny model, offline, on CPU. Run from the repository
# root after installing (README.md, command 1). Work files go to $LLMPROD_WORK (default work/quickstart).
set -euo pipefail

WORK=${LLMPROD_WORK:-work/quickstart}
rm -rf "$WORK"
mkdir -p "$WORK"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. build the tiny model (Llama architecture, trained ~1 min on this Python's docs)"
run llmprod tiny-model "$WORK/tiny" --trained --texts "$WORK"

step "2. quantize it: GPTQ W4A16 and AWQ W4A16 (llm-compressor, compressed-tensors for vLLM)"
run llmprod quantize "$WORK/tiny" --method gptq --output "$WORK/tiny-gptq" \
    --dataset "$WORK/calibration.txt" --num-samples 32 --seq-len 512
run llmprod quantize "$WORK/tiny" --method awq --output "$WORK/tiny-awq" \
    --dataset "$WORK/calibration.txt" --num-samples 32 --seq-len 512 --eval --eval-dataset "$WORK/eval.txt"

step "3. the CI gate: perplexity of each quantized model against the original (exit 1 past +5%)"
run llmprod perplexity "$WORK/tiny-gptq" --baseline "$WORK/tiny" --dataset "$WORK/eval.txt" \
    --seq-len 512 --max-increase 0.05
run llmprod perplexity "$WORK/tiny-awq" --baseline "$WORK/tiny" --dataset "$WORK/eval.txt" \
    --seq-len 512 --max-increase 0.05 --json > "$WORK/perplexity-awq.json"
echo "gate result written to $WORK/perplexity-awq.json" >&2

step "4. plan GPU memory for the quantized model, and for a real Llama-3.1-8B config, as vLLM would allocate it"
run llmprod estimate-memory "$WORK/tiny-gptq" --gpu L4 --context 2048 --batch 8
run llmprod estimate-memory tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json \
    --weights w4a16 --gpu L4 --context 8192 --batch 8

step "the rest of the pipeline, as each command lands (each says plainly when it is not available yet)"
pending() {
  printf '$ %s\n' "$*" >&2
  if "$@"; then :; else
    rc=$?
    [ "$rc" -eq 2 ] || exit "$rc"  # 2: "not available yet"; anything else is a real failure
  fi
}
pending llmprod serve "$WORK/tiny-gptq" --guardrails recipes/guardrails/default.yaml --port 8000
pending llmprod bench http://127.0.0.1:8000 --model tiny --concurrency 1,4 --requests 8 --plot "$WORK/bench.png"

step "done: work files are in $WORK"
