#!/usr/bin/env bash
# llmprod against real vLLM 0.26.0 (/tmp/vbin/vllm, ../shared/vllm-device/) on the H200 machine, from the
# repository root:   bash benchmarks/h200/vllm_checks.sh OUTDIR
#  1. a start vLLM refuses (the default max_model_len of 131,072 in 3% of the GPU) through `llmprod serve`:
#     exit 2 with vLLM's reason, not a timeout;
#  2. supervision under load (benchmarks/supervision.py): kill the EngineCore, then the API server;
#     recovery times, statuses, and what a SIGTERM leaves behind;
#  3. a sliding-window model's start-up lines (Gemma 3 27B's text config cut to 6 layers, one 5:1 cycle,
#     random weights), for `estimate-memory --vllm-log`.
# Random weights in real shapes throughout (llmprod.tinymodel.build_shaped_model). --enforce-eager keeps each
# start to ~30 s (no torch.compile, no CUDA graphs): GPU time is scarce.
set -uo pipefail
out=${1:?usage: vllm_checks.sh OUTDIR}
export PYTHONPATH=$PWD:/tmp/vsite HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cfg=tests/data/model-configs
python3 -c "from llmprod.tinymodel import build_shaped_model as b; b('$cfg/meta-llama__Llama-3.2-1B-Instruct.json', '/tmp/l1b')" \
    > /dev/null 2>&1

timeout 150 python3 -m llmprod serve /tmp/l1b --engine vllm --vllm-bin /tmp/vbin/vllm --port 8101 \
    --gpu-memory-utilization 0.03 --engine-log "$out/refused.engine.log" --json -- --enforce-eager \
    > "$out/refused.json" 2> "$out/refused.stderr"
echo "refused start: exit $? ($(tail -c 400 "$out/refused.stderr"))"

timeout 330 python3 benchmarks/supervision.py /tmp/l1b --vllm-bin /tmp/vbin/vllm --out "$out/supervision-h200.json" \
    -- --enforce-eager --gpu-memory-utilization 0.3 --max-model-len 4096 > /dev/null 2>&1
echo "supervision: exit $?"; python3 -c "import json; d=json.load(open('$out/supervision-h200.json')); \
print(json.dumps({k: d.get(k) for k in ('kills', 'serve_exit_code', 'shutdown_seconds', 'left_behind')}))"

python3 - <<PY
import json
c = json.load(open("$cfg/google__gemma-3-27b-it__text_config_only.json"))
c["num_hidden_layers"] = 6
json.dump(c, open("/tmp/gemma3-6l.json", "w"))
from llmprod.tinymodel import build_shaped_model
build_shaped_model("/tmp/gemma3-6l.json", "/tmp/g3")
PY
/tmp/vbin/vllm serve /tmp/g3 --host 127.0.0.1 --port 8102 --max-model-len 32768 --enforce-eager \
    > "$out/gemma3-6l.log" 2>&1 &
vllm=$!
for _ in $(seq 200); do  # until it answers, or exits
  python3 -c "import httpx; httpx.get('http://127.0.0.1:8102/health').raise_for_status()" 2>/dev/null && break
  kill -0 $vllm 2>/dev/null || break; sleep 1
done
kill -TERM $vllm; wait $vllm 2>/dev/null
grep -E "Model loading took|KV cache|concurrency|Actual usage" "$out/gemma3-6l.log" | cut -c1-220
