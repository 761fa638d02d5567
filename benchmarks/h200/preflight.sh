#!/usr/bin/env bash
# vLLM 0.26.0's own memory plan for many architectures on one H200, for `estimate-memory` (issue #31).
#
#   setsid bash benchmarks/h200/preflight.sh /tmp/pf-out > /tmp/pf.out 2>&1 < /dev/null &
#
# Each run starts `vllm serve DIR --load-format dummy` (random weights from config.json alone, so no download)
# on a model directory holding one of tests/data/model-configs and llmprod's tiny tokenizer, waits for the
# start-up line that closes the memory plan ("Free memory on device ... Actual usage ..."), stops the process
# group, waits for the GPU to be empty again, and keeps the log. Runs are one at a time: vLLM measures
# non-torch memory from the device's free memory, so a second process would pollute the figures.
# OUT/progress.log says how far it got; OUT/logs/NAME.log is each run's log, as vLLM wrote it.
set -uo pipefail
out=${1:?usage: preflight.sh OUTDIR [NAME...]}
shift
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$PWD:/tmp/vsite
cfg=tests/data/model-configs
mkdir -p "$out/logs" /tmp/pf
log() { echo "$(date +%T) $*" | tee -a "$out/progress.log"; }

# NAME|CONFIG|vllm serve flags (beyond the model and --load-format dummy)
RUNS="
qwen3-30b-a3b|Qwen__Qwen3-30B-A3B.json|
gpt-oss-20b|openai__gpt-oss-20b.json|
mixtral-8x7b|mistralai__Mixtral-8x7B-v0.1.json|
deepseek-v2-lite-32k|deepseek-ai__DeepSeek-V2-Lite.json|--max-model-len 32768
gpt-oss-120b|openai__gpt-oss-120b.json|
qwen3-30b-a3b-fp8-fp8kv-32k|Qwen__Qwen3-30B-A3B-FP8.json|--kv-cache-dtype fp8 --max-model-len 32768
gemma-3-27b|google__gemma-3-27b-it__text_config_only.json|
qwen3-32b-awq|Qwen__Qwen3-32B-AWQ__transformers5_repr.json|
qwen2.5-7b-gptq-int4|Qwen__Qwen2.5-7B-Instruct-GPTQ-Int4.json|
gpt-oss-20b-8k|openai__gpt-oss-20b.json|--max-model-len 8192
phi-4|microsoft__phi-4.json|
mistral-7b-mnbt2048|mistralai__Mistral-7B-v0.3.json|--max-num-batched-tokens 2048
gemma-3-27b-16k|google__gemma-3-27b-it__text_config_only.json|--max-model-len 16384
qwen3-32b-fp8|Qwen__Qwen3-32B-FP8.json|
qwen3-8b|Qwen__Qwen3-8B.json|
gemma-2-9b|google__gemma-2-9b.json|
gemma-2-9b-4k|google__gemma-2-9b.json|--max-model-len 4096
"

nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv > "$out/gpu.csv" 2>&1
# llmprod's tiny tokenizer: every model directory gets a copy (vLLM needs one to start; its ids fit any vocabulary)
python3 - <<'PY' || { log "tokenizer failed"; exit 1; }
from llmprod.tinymodel import RANDOM, _train_tokenizer, corpus_split
_train_tokenizer(corpus_split()[0], RANDOM).save_pretrained("/tmp/pf/tokenizer")
PY

gpu_empty() {  # up to 60 s for the last run's memory to be given back
  for _ in $(seq 60); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [ "${used:-99999}" -lt 1024 ] && return 0
    sleep 1
  done
  log "GPU still holds ${used} MiB"
}

one() {  # one NAME CONFIG FLAGS...
  local name=$1 config=$2; shift 2
  local dir=/tmp/pf/$name
  rm -rf "$dir"; mkdir -p "$dir"; cp /tmp/pf/tokenizer/* "$dir/"
  python3 -c "import json, sys; c = json.load(open(sys.argv[1])); \
json.dump({k: v for k, v in c.items() if not k.startswith('_')}, open(sys.argv[2], 'w'), indent=1)" \
      "$cfg/$config" "$dir/config.json"
  log "start $name: vllm serve $config --load-format dummy $*"
  local t0=$SECONDS
  setsid /tmp/vbin/vllm serve "$dir" --load-format dummy --host 127.0.0.1 --port 8300 "$@" \
      > "$out/logs/$name.log" 2>&1 < /dev/null &
  local pid=$!
  local why="timeout"
  for _ in $(seq 420); do
    if grep -q "Free memory on device" "$out/logs/$name.log"; then why="planned"; break; fi
    kill -0 "$pid" 2>/dev/null || { why="exited"; break; }
    sleep 1
  done
  kill -KILL -- "-$pid" 2>/dev/null  # the plan is logged; nothing to shut down gracefully
  wait "$pid" 2>/dev/null
  gpu_empty
  log "done $name: $why after $((SECONDS - t0)) s; $(grep -E 'GPU KV cache size|Maximum concurrency' "$out/logs/$name.log" \
      | sed 's/.*\] //' | tr '\n' ' ')"
}

only=" $* "
while IFS='|' read -r name config flags; do
  [ -z "$name" ] && continue
  [ "$only" != "  " ] && [[ "$only" != *" $name "* ]] && continue
  # shellcheck disable=SC2086
  one "$name" "$config" $flags
done <<< "$RUNS"
log "all done"
