#!/usr/bin/env bash
# What issues #18, #20 and #22 still need from the GPU, as one batch for the 2-GPU H200 machine
# (nvidia-h200-x2), from the repository root after `bash .vllm-device/install.sh 3` with llm-compressor's
# wheels carried in .whl (../shared/GPU.md; autoawq and zstandard too):
#
#     setsid bash benchmarks/h200/remaining.sh RESULTS_DIR > RESULTS_DIR.log 2>&1 < /dev/null &
#
# then poll with back-to-back `run` calls (`sleep 240; tar czf $OUT/r.tgz -C / RESULTS_DIR`): the machine is
# handed back 30 s after a call returns, /tmp with it, and a gap between calls lost a whole batch once.
#
#  1. 8B GPTQ W4A16 on 64 x 2048 tokens with --gpus 1, then --gpus 2, alone on the machine: wall time and
#     each rank's phases (load, oneshot, save), then the perplexity of both outputs (#18).
#  2. GPU 1, while 3 runs: the legacy AWQ GEMM checkpoint (AutoAWQ) and FP8 W8A8 with calibrated FP8 KV
#     scales (#18, #20).
#  3. GPU 0: vLLM serves the FP8-KV checkpoint (its KV cache goes FP8 under `auto`) and the AWQ GEMM one
#     (awq_marlin); start-up logs kept, `llmprod bench` at 1/8/32/128 (#18, #20).
#  4. Perplexity as served (#22): `perplexity --engine vllm` and the transformers path on the bf16 model and
#     on GPTQ W4A16, same windows; speed of both.
#  5. Both GPUs: bf16 at tensor parallel 2 (start-up log, bench), and `perplexity --engine vllm
#     --tensor-parallel-size 2` (#20, #22).
#  6. Supervision with real process kills on a 1B shape (#20).
set -uo pipefail
R=${1:?usage: remaining.sh RESULTS_DIR}
mkdir -p "$R"
W=/tmp/rm
mkdir -p "$W"
. benchmarks/h200/common.sh

install_wheels
PYTHONPATH=$QP python3 -c "
from llmprod.tinymodel import build_shaped_model, corpus_split
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json', '$W/bf16')
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/l1b')
train, held = corpus_split()
open('$W/cal.txt', 'w').write(train * 3)
open('$W/eval.txt', 'w').write(held * 4)" > "$R/model.out" 2>&1 || { log "model build failed"; exit 1; }
log "built"

# 1. one GPU, then two
CAL=(--dataset "$W/cal.txt" --num-samples 64 --seq-len 2048)
q gptq-1gpu 0 --method gptq "${CAL[@]}"
q gptq-2gpu 0,1 --method gptq --gpus 2 "${CAL[@]}"

PPL=(--dataset "$W/eval.txt" --seq-len 2048 --max-tokens 65536 --json)
# 2. on GPU 1 meanwhile; 3. on GPU 0
(
  SMALL=(--dataset "$W/cal.txt" --num-samples 32 --seq-len 512)
  q awq-gemm 1 --method awq --format awq "${SMALL[@]}" &
  q fp8-kv 1 --scheme w8a8-fp8 --kv-cache-scheme fp8 "${SMALL[@]}"
  wait
  touch "$R/quantized.done"
) &

for m in gptq-1gpu gptq-2gpu; do
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$QP timeout 900 python3 -m llmprod perplexity "$W/$m" "${PPL[@]}" \
      > "$R/ppl-transformers-$m.json" 2> "$R/ppl-transformers-$m.err"
  log "perplexity (transformers) $m: exit $?"
done

while [ ! -f "$R/quantized.done" ]; do sleep 5; done
serve_bench fp8-kv fp8-kv 0 8100
serve_bench awq-gemm awq-gemm 0 8101

# 4. perplexity as served, and the transformers path, on the same windows (one GPU)
for m in bf16 gptq-1gpu; do
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$SP timeout 900 python3 -m llmprod perplexity "$W/$m" --engine vllm \
      --vllm-bin /tmp/vbin/vllm "${PPL[@]}" > "$R/ppl-vllm-$m.json" 2> "$R/ppl-vllm-$m.err"
  log "perplexity (vllm) $m: exit $?"
done
CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$QP timeout 900 python3 -m llmprod perplexity "$W/bf16" "${PPL[@]}" \
    > "$R/ppl-transformers-bf16.json" 2> "$R/ppl-transformers-bf16.err"
log "perplexity (transformers) bf16: exit $?"

# 5. tensor parallel 2
serve_bench bf16-tp2 bf16 0,1 8102 --tensor-parallel-size 2
PYTHONPATH=$SP timeout 900 python3 -m llmprod perplexity "$W/bf16" --engine vllm --vllm-bin /tmp/vbin/vllm \
    --tensor-parallel-size 2 "${PPL[@]}" > "$R/ppl-vllm-bf16-tp2.json" 2> "$R/ppl-vllm-bf16-tp2.err"
log "perplexity (vllm, tp2) bf16: exit $?"

# 6. supervision with real kills
CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$SP timeout 420 python3 benchmarks/supervision.py "$W/l1b" --vllm-bin /tmp/vbin/vllm \
    --out "$R/supervision-h200.json" -- --gpu-memory-utilization 0.3 --max-model-len 4096 > "$R/supervision.out" 2>&1
log "supervision: exit $?"
touch "$R/all.done"
log "all done"
