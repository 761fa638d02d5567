#!/usr/bin/env bash
# The gateway's cost with the default policy on the H200 machine, from the repository root:
#   bash benchmarks/h200/gateway.sh host OUTDIR     the fake engine at 2 ms a token, prose and runs, a core each,
#                                                   then each gateway as 4 processes on 4 cores
#   bash benchmarks/h200/gateway.sh vllm OUTDIR     real vLLM (/tmp/vbin/vllm) on the tiny model, trained
#                                                   (prose-like) and random (gibberish runs)
set -uo pipefail
what=${1:?usage: gateway.sh host|vllm OUTDIR}
out=${2:?usage: gateway.sh host|vllm OUTDIR}
export PYTHONPATH=$PWD:/tmp/vsite HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$what" = host ]; then
  for text in prose runs; do
    timeout 280 python3 benchmarks/gateway_overhead.py --isolate --text "$text" --itl 0.002 --rounds 3 \
        --out "$out/gateway-overhead-h200-host-$text-2ms.json" 2>&1 | tail -5
    # four gateway processes on four cores each side (serve --workers 4)
    timeout 280 python3 benchmarks/gateway_overhead.py --isolate --workers 4 --text "$text" --itl 0.002 --rounds 3 \
        --out "$out/gateway-overhead-h200-host-$text-2ms-4-workers.json" 2>&1 | tail -5
  done
  exit 0
fi
for kind in trained random; do
  python3 -m llmprod tiny-model "/tmp/tiny-$kind" "--$kind" --json > /dev/null
  /tmp/vbin/vllm serve "/tmp/tiny-$kind" --served-model-name tiny --host 127.0.0.1 --port 8012 \
      --gpu-memory-utilization 0.3 --max-model-len 2048 > "$out/vllm-tiny-$kind.log" 2>&1 &
  vllm=$!
  python3 -c "from llmprod.testing.servers import wait_ready; wait_ready('http://127.0.0.1:8012/health', 400)"
  timeout 240 python3 benchmarks/gateway_overhead.py --upstream http://127.0.0.1:8012 --model tiny --isolate \
      --rounds 3 --output-tokens 128 --out "$out/gateway-overhead-h200-vllm-tiny-$kind.json" 2>&1 | tail -5
  kill -TERM $vllm; wait $vllm 2>/dev/null
done
