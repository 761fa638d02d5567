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
#  A. Both GPUs, nothing else running: 8B GPTQ W4A16 on 128 x 2048 tokens with --gpus 2 (#18).
#  B. GPU 0, the same with one GPU; GPU 1 meanwhile quantizes FP8 W8A8 with calibrated FP8 KV scales (a few
#     calibration passes, little host work, so the one-GPU time stays the machine's alone).
#  C. Two tracks, one per GPU:
#     GPU 0: vLLM serves the FP8-KV checkpoint through `llmprod serve --engine vllm` (start-up log, kernels,
#            `llmprod bench` at 1/8/32/128); `perplexity --engine vllm` on bf16 and on GPTQ W4A16 (#22);
#            supervision with real kills of vLLM's processes on a 1B shape (#20).
#     GPU 1: the legacy AWQ GEMM checkpoint (AutoAWQ), served and benched likewise (#20); the transformers
#            path's perplexity of bf16 and both GPTQ outputs (same windows as the vLLM path); the scoring loop
#            against the plain loop on 1B and 8B shapes with its variants (#22).
#  D. Both GPUs: `perplexity --engine vllm --tensor-parallel-size 2` on bf16, its start-up log kept as the
#     tensor-parallel row of estimate-memory's comparison (#20, #22).
set -uo pipefail
R=${1:?usage: remaining.sh RESULTS_DIR}
W=/tmp/rm
. benchmarks/h200/common.sh

install_wheels
PYTHONPATH=$QP python3 -c "
from llmprod.tinymodel import build_shaped_model, corpus_split
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json', '$W/bf16')
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/l1b')
train, held = corpus_split()
open('$W/cal.txt', 'w').write(train * 6)
open('$W/eval.txt', 'w').write(held + train)" > "$R/model.out" 2>&1 || { log "model build failed"; exit 1; }
log "built"

PPL=(--dataset "$W/eval.txt" --seq-len 2048 --max-tokens 65536 --json)
ppl_vllm() {  # ppl_vllm NAME GPUS [flags]: perplexity as served, vLLM's start-up log kept
  local m=$1 gpus=$2; shift 2
  local tag=$m${1:+-tp2}
  mkdir -p "$W/tmp-$tag"  # each run's own TMPDIR: its vLLM log is under $TMPDIR/llmprod, not shared
  TMPDIR=$W/tmp-$tag CUDA_VISIBLE_DEVICES=$gpus PYTHONPATH=$SP timeout 900 python3 -m llmprod perplexity "$W/$m" \
      --engine vllm --vllm-bin /tmp/vbin/vllm "${PPL[@]}" "$@" > "$R/ppl-vllm-$tag.json" 2> "$R/ppl-vllm-$tag.err"
  log "perplexity (vllm) $tag: exit $?"
  cp "$W/tmp-$tag"/llmprod/perplexity-vllm-*.log "$R/vllm-ppl-$tag.log" 2>/dev/null
}
ppl_transformers() {  # ppl_transformers NAME GPU
  CUDA_VISIBLE_DEVICES=$2 PYTHONPATH=$QP timeout 900 python3 -m llmprod perplexity "$W/$1" "${PPL[@]}" \
      > "$R/ppl-transformers-$1.json" 2> "$R/ppl-transformers-$1.err"
  log "perplexity (transformers) $1: exit $?"
}

# A and B: two GPUs, then one, same calibration set
CAL=(--dataset "$W/cal.txt" --num-samples 128 --seq-len 2048)
q gptq-2gpu 0,1 --method gptq --gpus 2 "${CAL[@]}"
SMALL=(--dataset "$W/cal.txt" --num-samples 32 --seq-len 512)
q fp8-kv 1 --scheme w8a8-fp8 --kv-cache-scheme fp8 "${SMALL[@]}" &
q gptq-1gpu 0 --method gptq "${CAL[@]}"
wait

# C. GPU 1's track in the background, GPU 0's in the foreground
(
  q awq-gemm 1 --method awq --format awq "${SMALL[@]}"
  serve_bench awq-gemm awq-gemm 1 8101
  for m in bf16 gptq-1gpu gptq-2gpu; do ppl_transformers "$m" 1; done
  CUDA_VISIBLE_DEVICES=1 PYTHONPATH=$QP timeout 900 python3 benchmarks/perplexity_bench.py --device cuda \
      --out "$R/perplexity-bench-1b.json" --model "$W/l1b" --work "$W/pb" --repeats 2 --max-tokens 65536 \
      --variants llmprod-b1,llmprod-b2,llmprod-b8,llmprod-eager > "$R/perplexity-bench-1b.out" 2>&1
  log "perplexity bench 1b: exit $?"
  CUDA_VISIBLE_DEVICES=1 PYTHONPATH=$QP timeout 900 python3 benchmarks/perplexity_bench.py --device cuda \
      --out "$R/perplexity-bench-8b.json" --model "$W/bf16" --work "$W/pb" --repeats 1 --max-tokens 65536 \
      --variants llmprod-b1 > "$R/perplexity-bench-8b.out" 2>&1
  log "perplexity bench 8b: exit $?"
  touch "$R/track1.done"
) &
serve_bench fp8-kv fp8-kv 0 8100
for m in gptq-1gpu bf16; do ppl_vllm "$m" 0; done
CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$SP timeout 420 python3 benchmarks/supervision.py "$W/l1b" --vllm-bin /tmp/vbin/vllm \
    --out "$R/supervision-h200.json" -- --gpu-memory-utilization 0.3 --max-model-len 4096 > "$R/supervision.out" 2>&1
log "supervision: exit $?"
wait

# D. tensor parallel 2
ppl_vllm bf16 0,1 --tensor-parallel-size 2
touch "$R/all.done"
log "all done"
