#!/usr/bin/env bash
# Tool calls from real vLLM 0.26.0 through the guarded gateway, on the H200, from the repository root once
# vLLM is installed at /tmp/vbin/vllm (../shared/vllm-device/README.md):
#   bash benchmarks/h200/tools.sh OUTDIR
# The tiny model with random weights (--load-format dummy) and vLLM's hermes tool-call parser;
# tool_choice=required makes vLLM constrain its output to a tool call, so the gateway's tool-call path meets
# vLLM's real chunks (tools_check.py).
set -uo pipefail
R=${1:?usage: tools.sh OUTDIR}
W=/tmp/tools-work
. benchmarks/h200/common.sh
export PYTHONPATH=$SP
python3 -m llmprod tiny-model "$W/tiny" --random --json > /dev/null 2>> "$R/progress.log"
/tmp/vbin/vllm serve "$W/tiny" --served-model-name tiny --host 127.0.0.1 --port 8013 \
    --gpu-memory-utilization 0.3 --max-model-len 2048 --load-format dummy \
    --enable-auto-tool-choice --tool-call-parser hermes > "$R/vllm-tools.log" 2>&1 &
vllm=$!
python3 -c "from llmprod.testing.servers import wait_ready; wait_ready('http://127.0.0.1:8013/health', 400)"
log "vllm ready"
timeout 300 python3 benchmarks/h200/tools_check.py http://127.0.0.1:8013 --model tiny --out "$R" >> "$R/progress.log" 2>&1
log "tools check: exit $?"
kill -TERM $vllm; wait $vllm 2>/dev/null
log "done"
