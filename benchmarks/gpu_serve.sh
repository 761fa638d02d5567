#!/usr/bin/env bash
# GPU measurements of serve, bench and estimate-memory on a Llama-3.2-1B-shaped model with random bf16
# weights (speed and memory mean something, the text does not). Run on the GPU machine from the repo root
# with the wheels on PYTHONPATH (see the note of issue 9). Results go to ${OUT:-work/gpu}; ROUNDS=2 bench rounds.
#   - estimate-memory's weights and KV cache against what the GPU allocates (gpu_memory_check.py)
#   - llmprod serve --engine transformers, unquantized and GPTQ W4A16, and llmprod bench at 1, 8, 32
#     streams through the gateway (default guardrail policy) and directly against the engine behind it
set -euo pipefail
OUT=${OUT:-work/gpu}
W=/tmp/llmprod-gpu
mkdir -p "$OUT" "$W"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
serve=
trap '[ -n "$serve" ] && kill -TERM "$serve" 2>/dev/null; wait' EXIT
[ -d "$W/llama-1b" ] || python3 -c "from llmprod.tinymodel import build_shaped_model; build_shaped_model(
  'tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/llama-1b')"
python3 -c "from llmprod.tinymodel import corpus_split; t, e = corpus_split(); open('$W/calib.txt','w').write(t)"
[ -d "$W/llama-1b-gptq" ] || python3 -m llmprod quantize "$W/llama-1b" --method gptq --output "$W/llama-1b-gptq" \
  --device cuda --dataset "$W/calib.txt" --num-samples 64 --seq-len 1024 --json > "$OUT/quantize-gptq.json" 2> "$OUT/quantize.err"
python3 benchmarks/gpu_memory_check.py "$W/llama-1b" "$W/llama-1b-gptq" --gpu-memory 40GiB --context 4096 --batch 8 \
  --out "$OUT/memory-check-h200.json"
for m in llama-1b llama-1b-gptq; do
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m llmprod serve "$W/$m" --engine transformers --port "$port" --engine-log "$OUT/engine-$m.log" --json \
    > "$W/serve-$m.json" 2> "$OUT/serve-$m.err" &
  serve=$!
  for _ in $(seq 1 240); do [ -s "$W/serve-$m.json" ] && break; kill -0 $serve || { cat "$OUT/serve-$m.err"; exit 1; }; sleep 1; done
  cp "$W/serve-$m.json" "$OUT/serve-$m.json"
  engine=$(python3 -c "import json; print(json.load(open('$W/serve-$m.json'))['upstream'])")
  for round in $(seq 1 "${ROUNDS:-2}"); do
    python3 -m llmprod bench "http://127.0.0.1:$port" --model "$W/$m" --concurrency 1,8,32 --input-tokens 256 \
      --output-tokens 128 --json --plot "$OUT/bench-$m.png" > "$OUT/bench-$m-gateway-$round.json" 2>> "$OUT/bench.err"
    python3 -m llmprod bench "$engine" --model "$W/$m" --concurrency 1,8,32 --input-tokens 256 \
      --output-tokens 128 --json > "$OUT/bench-$m-direct-$round.json" 2>> "$OUT/bench.err"
  done
  curl -s "http://127.0.0.1:$port/metrics" | grep -E "^llmprod_(requests_total|output_tokens_total|time_to_first_token_seconds_(sum|count))" > "$OUT/metrics-$m.txt" || true
  kill -TERM $serve
  wait $serve
  serve=
  tail -2 "$OUT/serve-$m.err"
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv"
