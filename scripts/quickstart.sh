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

step "5. load-test the tiny model served by transformers serve (the embedded engine) and plot the trade-off"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/hf-cache"  # transformers serve lists its cache on /v1/models and fails if there is none
HF_HUB_CACHE="$WORK/hf-cache" transformers serve "$WORK/tiny" --port "$PORT" --device cpu --continuous-batching \
    > "$WORK/engine.log" 2>&1 &
ENGINE=$!
trap 'kill "$ENGINE" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null && break
  kill -0 "$ENGINE" 2>/dev/null || { tail -20 "$WORK/engine.log" >&2; exit 1; }
  sleep 1
done
run llmprod bench "http://127.0.0.1:$PORT" --model "$WORK/tiny" --concurrency 1,4,8 --requests 16 \
    --input-tokens 64 --output-tokens 32 --plot "$WORK/bench.png"
kill "$ENGINE" && wait "$ENGINE" 2>/dev/null || true

step "still to come: llmprod serve (says plainly that it is not available yet)"
printf '$ %s\n' "llmprod serve $WORK/tiny-gptq --guardrails recipes/guardrails/default.yaml" >&2
llmprod serve "$WORK/tiny-gptq" --guardrails recipes/guardrails/default.yaml || [ $? -eq 2 ]

step "done: work files are in $WORK"
