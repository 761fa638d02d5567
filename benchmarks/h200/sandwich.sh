#!/usr/bin/env bash
# The guardrail sandwich on the H200 machine with real vLLM (installed by ../shared/vllm-device/ at
# /tmp/vbin/vllm), from the repository root:   bash benchmarks/h200/sandwich.sh OUTDIR
#  1. the sandwich tests through `llmprod serve`, the Llama Guard endpoint being vLLM serving the tiny
#     Llama Guard (tests/serve/test_serve_sandwich.py with LLMPROD_TEST_VLLM);
#  2. what a check costs on the GPU: a Llama-3.2-1B-shaped Llama Guard (random weights, the shapes of
#     Llama Guard 3 1B) behind vLLM and in-process on the GPU (benchmarks/guard_latency.py).
set -uo pipefail
out=${1:?usage: sandwich.sh OUTDIR}
export PYTHONPATH=$PWD:/tmp/vsite HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LLMPROD_TEST_VLLM=/tmp/vbin/vllm timeout 400 python3 -m pytest tests/serve/test_serve_sandwich.py -q -s -rA \
    > "$out/sandwich-vllm-pytest.log" 2>&1
echo "sandwich tests against vLLM: exit $?"; tail -3 "$out/sandwich-vllm-pytest.log"

python3 -c "from llmprod.tinymodel.guards import build_tiny_llama_guard as b; print(b('/tmp/lg1b', \
config_json='tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', dtype='bfloat16'))"
/tmp/vbin/vllm serve /tmp/lg1b --served-model-name lg1b --host 127.0.0.1 --port 8011 \
    --gpu-memory-utilization 0.3 --max-model-len 4096 > "$out/vllm-lg1b.log" 2>&1 &
vllm=$!
python3 -c "from llmprod.testing.servers import wait_ready; wait_ready('http://127.0.0.1:8011/health', 400)"
timeout 300 python3 benchmarks/guard_latency.py --device cuda --llama-guard /tmp/lg1b \
    --guard-endpoint http://127.0.0.1:8011 --guard-name lg1b --format llama-guard-3-1b --rounds 3 \
    --out "$out/guard-latency-h200.json" 2>&1 | tail -40
kill -TERM $vllm; wait $vllm 2>/dev/null
grep -E "Loading weights took|Model loading took|KV cache|CUDA graph" "$out/vllm-lg1b.log" | tail -5
