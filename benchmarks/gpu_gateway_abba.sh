#!/usr/bin/env bash
# The gateway's overhead on the GPU, fairly ordered: `llmprod serve --engine transformers` (default
# guardrail policy) on the Llama-3.2-1B-shaped model; one uncounted warm-up load, then `llmprod bench`
# directly against the engine and through the gateway in A-B-B-A order, so engine warm-up and drift
# do not favour either. Results go to ${OUT:-work/gpu}.
set -euo pipefail
OUT=${OUT:-work/gpu}
W=/tmp/llmprod-gpu
mkdir -p "$OUT" "$W"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -d "$W/llama-1b" ] || python3 -c "from llmprod.tinymodel import build_shaped_model; build_shaped_model(
  'tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/llama-1b')" > /dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m llmprod serve "$W/llama-1b" --engine transformers --port "$port" --json > "$W/serve.json" 2> "$W/serve.err" &
serve=$!
trap 'kill -TERM "$serve" 2>/dev/null; wait' EXIT
for _ in $(seq 1 240); do [ -s "$W/serve.json" ] && break; kill -0 $serve || { cat "$W/serve.err"; exit 1; }; sleep 1; done
engine=$(python3 -c "import json; print(json.load(open('$W/serve.json'))['upstream'])")
bench() { python3 -m llmprod bench "$1" --model "$W/llama-1b" --concurrency "$2" --input-tokens 256 --output-tokens 128 --json; }
bench "$engine" 8 > /dev/null 2>&1  # warm-up, not counted
for step in direct-1 gateway-1 gateway-2 direct-2; do
  url=$engine; [[ $step == gateway* ]] && url="http://127.0.0.1:$port"
  bench "$url" 1,8,32 > "$OUT/abba-$step.json" 2>/dev/null
done
