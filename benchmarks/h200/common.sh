# Sourced by the H200 batch scripts (formats.sh, remaining.sh, perplexity.sh) once they have set R (results) and
# W (work): it makes both directories and logs the machine first.
# NVLink multicast stays off on the lent multi-GPU machines (KINDS.md).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
QP=$PWD:/tmp/lcsite  # llm-compressor 0.14 with compressed-tensors 0.19 (the carried .whl)
SP=$PWD:/tmp/vsite   # vLLM's own site (compressed-tensors 0.17), for serve and bench

log() { echo "$(date +%T) $*" | tee -a "$R/progress.log"; }

install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lcsite \
      .whl/*.whl || { log "wheels failed"; exit 1; }
}

q() {  # q NAME GPUS ARGS...: one `llmprod quantize` of $W/bf16; its JSON, stderr, wall time and exit kept
  local name=$1 gpus=$2; shift 2
  local t0 t1 rc
  t0=$(date +%s.%N)
  CUDA_VISIBLE_DEVICES=$gpus PYTHONPATH=$QP python3 -m llmprod quantize "$W/bf16" --output "$W/$name" --json "$@" \
      > "$R/q-$name.json" 2> "$R/q-$name.err"
  rc=$?
  t1=$(date +%s.%N)
  echo "{\"name\": \"$name\", \"exit\": $rc, \"wall_seconds\": $(awk "BEGIN {print $t1 - $t0}"), \"args\": \"$*\"}" \
      > "$R/q-$name.run.json"
  [ $rc = 0 ] || touch "$R/q-$name.failed"
  log "quantized $name: exit $rc"
}

serve_bench() {  # serve_bench LABEL MODEL GPUS PORT [serve flags]: `llmprod serve --engine vllm`, bench, stop
  local label=$1 m=$2 gpus=$3 port=$4; shift 4
  log "serving $label on GPU(s) $gpus"
  CUDA_VISIBLE_DEVICES=$gpus PYTHONPATH=$SP timeout 600 python3 -m llmprod serve "$W/$m" --engine vllm \
      --vllm-bin /tmp/vbin/vllm --port "$port" --no-guardrails --max-model-len 4096 --engine-timeout 400 \
      --engine-log "$R/vllm-$label.log" --json "$@" > "$R/serve-$label.json" 2> "$R/serve-$label.err" &
  local serve=$!
  for _ in $(seq 450); do
    [ -s "$R/serve-$label.json" ] && break
    kill -0 $serve 2>/dev/null || break
    sleep 1
  done
  if [ -s "$R/serve-$label.json" ]; then
    log "ready $label"
    PYTHONPATH=$SP timeout 300 python3 -m llmprod bench "http://127.0.0.1:$port" --model "$W/$m" \
        --concurrency 1,8,32,128 --input-tokens 256 --output-tokens 128 --ignore-eos --duration 12 \
        --plot "$R/bench-$label.png" --json > "$R/bench-$label.json" 2> "$R/bench-$label.err"
    log "benched $label: exit $?"
  else
    log "serve $label never became ready"
  fi
  kill -TERM $serve 2>/dev/null
  wait $serve
  log "stopped $label: exit $?"
}

mkdir -p "$R" "$W"
log "machine: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tr '\n' ';') cores $(nproc)"
