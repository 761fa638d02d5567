#!/usr/bin/env bash
# A reasoning model's reasoning through the guarded gateway, with real vLLM on the H200, from the repository
# root (once vLLM is installed at /tmp/vbin/vllm: ../shared/vllm-device/README.md):
#   bash benchmarks/h200/reasoning.sh OUTDIR
# The tiny model with <think> tokens (reasoning_model.py), served by vLLM 0.26.0 with --reasoning-parser
# deepseek_r1 and --load-format dummy (random weights: nearly everything it writes is reasoning). Then the
# openai client through `llmprod serve --upstream` (reasoning_check.py), and tokens/s at 1, 16 and 64 streams
# direct, through the gateway without guardrails and with the default policy (gateway_overhead.py).
set -uo pipefail
R=${1:?usage: reasoning.sh OUTDIR}
W=/tmp/reasoning-work
. benchmarks/h200/common.sh
export PYTHONPATH=$SP
python3 benchmarks/h200/reasoning_model.py "$W/tiny-reasoning" >> "$R/progress.log" 2>&1
log "model built"
/tmp/vbin/vllm serve "$W/tiny-reasoning" --served-model-name tiny --host 127.0.0.1 --port 8012 \
    --gpu-memory-utilization 0.3 --max-model-len 2048 --load-format dummy --reasoning-parser deepseek_r1 \
    > "$R/vllm-reasoning.log" 2>&1 &
vllm=$!
python3 -c "from llmprod.testing.servers import wait_ready; wait_ready('http://127.0.0.1:8012/health', 400)"
log "vllm ready"
timeout 300 python3 benchmarks/h200/reasoning_check.py http://127.0.0.1:8012 --model tiny --out "$R" \
    >> "$R/progress.log" 2>&1
log "check: exit $?"
timeout 420 python3 benchmarks/gateway_overhead.py --upstream http://127.0.0.1:8012 --model tiny --isolate \
    --concurrency 1,16,64 --rounds 4 --duration 4 --output-tokens 128 \
    --out "$R/gateway-overhead-h200-vllm-reasoning.json" >> "$R/progress.log" 2>&1
log "overhead: exit $?"
kill -TERM $vllm; wait $vllm 2>/dev/null
log "done"
