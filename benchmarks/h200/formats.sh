#!/usr/bin/env bash
# Every quantization format llmprod writes, made by `llmprod quantize` and served by real vLLM 0.26.0 through
# `llmprod serve --engine vllm`, on the 2-GPU H200 machine (nvidia-h200-x2), from the repository root after
# `bash .vllm-device/install.sh 3` and with llm-compressor's wheels carried in .whl (../shared/GPU.md):
#
#     setsid bash benchmarks/h200/formats.sh RESULTS_DIR > RESULTS_DIR.log 2>&1 &
#
# 1. A Llama-3.1-8B shape with random bf16 weights (llmprod.tinymodel.build_shaped_model, on the GPU).
# 2. GPTQ W4A16 with one GPU, then with --gpus 2 (llm-compressor's data-parallel calibration), alone on the
#    machine, same 64 x 2048-token calibration set: wall times, formats, perplexity of both.
# 3. On GPU 1, in parallel: AWQ W4A16 (compressed-tensors), GPTQ W8A16, INT8 W8A8 (SmoothQuant + GPTQ), FP8
#    W8A8, FP8 blocks, NVFP4A16, FP8 W8A8 with a calibrated FP8 KV cache, and legacy AWQ GEMM (AutoAWQ); 32 x
#    512 tokens where a method reads data, as benchmarks/results/quantize-8b-*-h200.json did.
# 4. Meanwhile on GPU 0, then on both: each checkpoint (and bf16) served alone on its GPU by `llmprod serve
#    --engine vllm` (vLLM's defaults, --max-model-len 4096, no guardrails: the engine is what is compared), its
#    start-up log kept (kernels, memory lines: estimate-memory's test data), then `llmprod bench` through the
#    gateway at 1/8/32/128 streams, 256-token prompts, 128 output tokens with --ignore-eos.
# 5. bf16 at tensor parallel 2 (NVLink multicast off), then supervision with kills (benchmarks/supervision.py).
set -uo pipefail
R=${1:?usage: formats.sh RESULTS_DIR}
W=/tmp/fm
. benchmarks/h200/common.sh

df -h /tmp | tail -1 >> "$R/progress.log"
install_wheels

# 1. the model and the texts
PYTHONPATH=$QP python3 -c "
from llmprod.tinymodel import build_shaped_model, corpus_split
import json; print(json.dumps(build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json', '$W/bf16')))
train, held = corpus_split()
open('$W/cal.txt', 'w').write(train * 3)
open('$W/eval.txt', 'w').write(held)" > "$R/model.json" 2> "$R/model.err" || { log "model build failed"; exit 1; }
log "built $W/bf16"

# 2. one GPU, then two: the same calibration set
CAL=(--dataset "$W/cal.txt" --num-samples 64 --seq-len 2048)
q gptq-w4a16 0 --method gptq "${CAL[@]}"
q gptq-w4a16-2gpu 0,1 --method gptq --gpus 2 "${CAL[@]}"

# 3. everything else on GPU 1, four at a time
SMALL=(--dataset "$W/cal.txt" --num-samples 32 --seq-len 512)
(
  q awq-gemm 1 --method awq --format awq "${SMALL[@]}" &
  q awq-w4a16 1 --method awq "${SMALL[@]}" &
  ( q w8a8-fp8 1 --scheme w8a8-fp8; q fp8-block 1 --scheme fp8-block; q nvfp4a16 1 --scheme nvfp4a16
    q w8a8-fp8-kv 1 --scheme w8a8-fp8 --kv-cache-scheme fp8 "${SMALL[@]}" ) &
  ( q w8a8-int8 1 --scheme w8a8-int8 "${SMALL[@]}"; q gptq-w8a16 1 --method gptq --bits 8 "${SMALL[@]}" ) &
  wait
  for m in gptq-w4a16 gptq-w4a16-2gpu; do
    CUDA_VISIBLE_DEVICES=1 PYTHONPATH=$QP python3 -m llmprod perplexity "$W/$m" --dataset "$W/eval.txt" \
        --seq-len 2048 --json > "$R/ppl-$m.json" 2> "$R/ppl-$m.err"
    log "perplexity of $m: exit $?"
  done
  touch "$R/quantize.done"
) &
quantizing=$!

# 4. serve and bench, one model at a time on each GPU
MODELS=(bf16 gptq-w4a16 w8a8-fp8 w8a8-int8 awq-w4a16 gptq-w8a16 fp8-block nvfp4a16 w8a8-fp8-kv awq-gemm)
ready() { [ "$1" = bf16 ] || [ -f "$W/$1/llmprod.json" ]; }
failed() { [ -f "$R/q-$1.failed" ]; }

lane() {  # lane GPU PORT: take the next checkpoint that is ready and not taken, until none is left
  local gpu=$1 port=$2
  while :; do
    local left=0 took=0
    for m in "${MODELS[@]}"; do
      [ -d "$R/claim-$m" ] && continue
      failed "$m" && continue
      left=1
      ready "$m" || continue
      mkdir "$R/claim-$m" 2>/dev/null || continue
      took=1
      serve_bench "$m" "$m" "$gpu" "$port"
      break
    done
    [ $left = 0 ] && return
    [ $took = 0 ] && sleep 5
  done
}

lane 0 8100 &
lane0=$!
wait $quantizing
log "quantization done"
lane 1 8200 &
lane1=$!
wait $lane0 $lane1
log "all served"

# 5. tensor parallel 2, then supervision with real process kills
serve_bench bf16-tp2 bf16 0,1 8300 --tensor-parallel-size 2 --max-model-len 8192

PYTHONPATH=$SP python3 -c "from llmprod.tinymodel import build_shaped_model as b; \
b('tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/l1b')" > /dev/null 2>&1
CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$SP timeout 420 python3 benchmarks/supervision.py "$W/l1b" --vllm-bin /tmp/vbin/vllm \
    --out "$R/supervision-h200.json" -- --gpu-memory-utilization 0.3 --max-model-len 4096 \
    > "$R/supervision.out" 2>&1
log "supervision: exit $?"
ps -eo pid,args | grep -c "[V]LLM\|[v]llm serve" >> "$R/progress.log"
touch "$R/all.done"
log "all done"
