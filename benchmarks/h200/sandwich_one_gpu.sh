#!/usr/bin/env bash
# Issue #32's goals on the H200 machine, after ../shared/vllm-device/'s three install runs (/tmp/vbin/vllm):
#   setsid bash benchmarks/h200/sandwich_one_gpu.sh OUTDIR > /tmp/sog.out 2>&1 < /dev/null &
# then poll OUTDIR back to back (an idle machine is handed back after 30 s). The sandwich on one GPU (the main
# model's vLLM and a Llama-Guard-shaped vLLM, the memory split by serve) against the default policy on the same
# engine, A-B-B-A at 1, 16 and 64 streams; every engine's start-up log kept; the main model's KV cache set beside
# estimate-memory's with the split (--vllm-log reads the utilization serve gave it).
set -uo pipefail
out=${1:?usage: sandwich_one_gpu.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=$PWD:/tmp/vsite HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
echo "$(date +%T) start" >> "$out/progress.log"
timeout 1500 python3 benchmarks/sandwich_one_gpu.py --vllm-bin /tmp/vbin/vllm --out "$out" >> "$out/progress.log" 2>&1
echo "$(date +%T) bench exit $?" >> "$out/progress.log"
python3 -m llmprod estimate-memory tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json \
    --vllm-log "$out/main-engine.log" --json > "$out/estimate-vs-main-engine.json" 2>> "$out/progress.log"
echo "$(date +%T) all done" >> "$out/progress.log"
