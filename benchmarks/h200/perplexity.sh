#!/usr/bin/env bash
# What issues #22, #20 and #16 still need from the GPU machine, as one batch for nvidia-h200-x2, from the
# repository root after `bash .vllm-device/install.sh 3` (no llm-compressor wheels needed); on one GPU it
# leaves out part B:
#
#     setsid bash benchmarks/h200/perplexity.sh RESULTS_DIR > RESULTS_DIR.log 2>&1 < /dev/null &
#
# then poll with back-to-back `run` calls, as remaining.sh says.
#
#  A. GPU 0: the transformers path against the plain loop at the user's defaults (bf16), with its variants,
#     on the Llama-3.2-1B and Llama-3.1-8B shapes, one untimed pass first; both paths' speed on the 1B
#     shape, `perplexity` and `perplexity --engine vllm`; the decoder under torch.compile (#22).
#  B. Both GPUs: `perplexity --engine vllm --tensor-parallel-size 2` on the 8B shape, alone on the machine: its
#     speed (#22) and its start-up log, the tensor-parallel row of estimate-memory's comparison (#20).
#  C. Meanwhile, on cores of its own: the gateway's cost with the default policy on the host's CPU, a core
#     each, then 4 workers on 4 cores each (#16; gateway.sh host).
#
# PARTS="B" (say) runs only those parts; the default is all three.
set -uo pipefail
R=${1:?usage: perplexity.sh RESULTS_DIR}
PARTS=${PARTS:-A B C}
part() { [[ " $PARTS " == *" $1 "* ]]; }
W=/tmp/pp
. benchmarks/h200/common.sh

# C. the gateway on the host's CPU, on cores 0-10 (its --isolate placement takes 1-10); everything
#    below stays on the cores above, so the two tracks do not share a core.
LAST=$(($(nproc) - 1))
part C && ( taskset -c 0-10 env PYTHONPATH=$SP bash benchmarks/h200/gateway.sh host "$R" > "$R/gateway.out" 2>&1
  log "gateway: exit $?"; touch "$R/gateway.done" ) &
part C && taskset -cp 11-$LAST $$ > /dev/null

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
  TMPDIR=$W/tmp-$tag CUDA_VISIBLE_DEVICES=$gpus PYTHONPATH=$SP timeout 900 python3 -m llmprod perplexity "$W/$m" \
      "${PPL[@]}" "$@" > "$R/ppl-$tag.json" 2> "$R/ppl-$tag.err"
  log "perplexity $tag: exit $?"
  cp "$W/tmp-$tag"/llmprod/perplexity-vllm-*.log "$R/vllm-$tag.log" 2>/dev/null
}

bench() {  # bench NAME MODEL REPEATS MAX_TOKENS VARIANTS
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD timeout 900 python3 benchmarks/perplexity_bench.py --device cuda \
      --out "$R/perplexity-bench-$1.json" --model "$W/$2" --work "$W/pb" --repeats "$3" --max-tokens "$4" \
      --variants "$5" > "$R/perplexity-bench-$1.out" 2>&1
  log "perplexity bench $1: exit $?"
}
# A. the transformers path against the plain loop, then both paths' speed on the 1B shape
if part A; then
  bench 1b l1b 3 262144 llmprod-b1,llmprod-b2,llmprod-b8,llmprod-eager
  ppl transformers-1b 0 l1b
  ppl vllm-1b 0 l1b --engine vllm --vllm-bin /tmp/vbin/vllm
  bench 8b l8b 2 131072 llmprod-b1,llmprod-b8
  bench 1b-compile l1b 1 262144 llmprod-compile
fi

# B. tensor parallel 2 where the machine has two GPUs, and one GPU for comparison, each alone
if part B && [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  ppl vllm-8b-tp2 0,1 l8b --engine vllm --vllm-bin /tmp/vbin/vllm --tensor-parallel-size 2
  ppl vllm-8b 0 l8b --engine vllm --vllm-bin /tmp/vbin/vllm
  ppl transformers-8b 0 l8b
  ppl vllm-1b-c32 0 l1b --engine vllm --vllm-bin /tmp/vbin/vllm --concurrency 32  # does the served path scale?
fi
wait
touch "$R/all.done"
log "all done"
