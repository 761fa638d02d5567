#!/usr/bin/env bash
# The whole llmprod pipeline on the bundled tiny model, offline, on CPU. Run from the repository
# root after installing (README.md, command 1). Work files go to $LLMPROD_WORK (default work/quickstart).
set -euo pipefail

WORK=${LLMPROD_WORK:-work/quickstart}
rm -rf "$WORK"
mkdir -p "$WORK"
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1. build the tiny model (Llama architecture, trained ~1 min on this Python's docs)"
llmprod tiny-model "$WORK/tiny" --trained --texts "$WORK"

step "the rest of the pipeline, as each command lands (each says plainly when it is not available yet)"
pending() {
  printf '$ %s\n' "$*" >&2
  if "$@"; then :; else
    rc=$?
    [ "$rc" -eq 2 ] || exit "$rc"  # 2: "not available yet"; anything else is a real failure
  fi
}
pending llmprod quantize "$WORK/tiny" --method gptq --output "$WORK/tiny-gptq" --dataset "$WORK/calibration.txt"
pending llmprod perplexity "$WORK/tiny-gptq" --baseline "$WORK/tiny" --dataset "$WORK/eval.txt" --max-increase 0.25
pending llmprod estimate-memory "$WORK/tiny" --context 2048 --batch 8 --gpu L4
pending llmprod serve "$WORK/tiny" --guardrails recipes/guardrails/default.yaml --port 8000
pending llmprod bench http://127.0.0.1:8000 --model tiny --concurrency 1,4 --requests 8 --plot "$WORK/bench.png"

step "done: work files are in $WORK"
