#!/usr/bin/env bash
# What issues #22, #20 and #16 still need from the GPU machine, as one batch for nvidia-h200-x2, from the
# repository root after `bash .vllm-device/install.sh 3` (no llm-compressor wheels needed):
#
#     setsid bash benchmarks/h200/perplexity.sh RESULTS_DIR > RESULTS_DIR.log 2>&1 < /dev/null &
#
# then poll with back-to-back `run` calls, as remaining.sh says.
#
#  A. GPU 0: the transformers path against the plain loop at the user's defaults (bf16), with its variants,
#     on the Llama-3.2-1B and Llama-3.1-8B shapes, one untimed pass first (#22).
#     GPU 1 meanwhile: both paths' speed on the 1B shape, `perplexity` and `perplexity --engine vllm` (#22).
#  B. Both GPUs: `perplexity --engine vllm --tensor-parallel-size 2` on the 8B shape, alone on the machine: its
#     speed (#22) and its start-up log, the tensor-parallel row of estimate-memory's comparison (#20).
#  C. The gateway's cost with the default policy on the host's CPU, a core each (#16; gateway.sh host).
set -uo pipefail
R=${1:?usage: perplexity.sh RESULTS_DIR}
W=/tmp/pp
. benchmarks/h200/common.sh

PYTHONPATH=$PWD python3 -c "
from llmprod.tinymodel import build_shaped_model, corpus_split
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.1-8B-Instruct.json', '$W/l8b')
build_shaped_model('tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/l1b')
open('$W/eval.txt', 'w').write('\n\n'.join(corpus_split() * 3))" > "$R/model.out" 2>&1 || { log "model build failed"; exit 1; }
log "built"

PPL=(--dataset "$W/eval.txt" --seq-len 2048 --max-tokens 262144 --json)
ppl() {  # ppl TAG GPUS MODEL [flags]: one `llmprod perplexity`, its own TMPDIR so its vLLM log is its own
  local tag=$1 gpus=$2 m=$3; shift 3
  mkdir -p "$W/tmp-$tag"
  TMPDIR=$W/tmp-$tag CUDA_VISIBLE_DEVICES=$gpus PYTHONPATH=$PWD timeout 900 python3 -m llmprod perplexity "$W/$m" \
      "${PPL[@]}" "$@" > "$R/ppl-$tag.json" 2> "$R/ppl-$tag.err"
  log "perplexity $tag: exit $?"
  cp "$W/tmp-$tag"/llmprod/perplexity-vllm-*.log "$R/vllm-$tag.log" 2>/dev/null
}

# A. GPU 1's track in the background
(
  ppl transformers-1b 1 l1b
  ppl vllm-1b 1 l1b --engine vllm --vllm-bin /tmp/vbin/vllm
  touch "$R/track1.done"
) &
bench() {  # bench NAME MODEL REPEATS MAX_TOKENS VARIANTS
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD timeout 900 python3 benchmarks/perplexity_bench.py --device cuda \
      --out "$R/perplexity-bench-$1.json" --model "$W/$2" --work "$W/pb" --repeats "$3" --max-tokens "$4" \
      --variants "$5" > "$R/perplexity-bench-$1.out" 2>&1
  log "perplexity bench $1: exit $?"
}
bench 1b l1b 3 262144 llmprod-b1,llmprod-b2,llmprod-b8,llmprod-eager
bench 8b l8b 2 131072 llmprod-b1,llmprod-b8
wait

# B. tensor parallel 2, and one GPU for comparison, each alone
ppl vllm-8b-tp2 0,1 l8b --engine vllm --vllm-bin /tmp/vbin/vllm --tensor-parallel-size 2
ppl vllm-8b 0 l8b --engine vllm --vllm-bin /tmp/vbin/vllm
ppl transformers-8b 0 l8b

# C. the gateway on the host's CPU
PYTHONPATH=$SP bash benchmarks/h200/gateway.sh host "$R" > "$R/gateway.out" 2>&1
log "gateway: exit $?"
touch "$R/all.done"
log "all done"
