#!/usr/bin/env bash
# GPU paths of quantize and perplexity on a Llama-3.2-1B-shaped model with random bf16 weights
# (speed and memory mean something; perplexity does not). Run on the GPU machine from the repo root,
# with the quantize extra's wheels on PYTHONPATH. Results go to ${OUT:-work/gpu}.
set -euo pipefail
OUT=${OUT:-work/gpu}
W=/tmp/llmprod-gpu
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "from llmprod.tinymodel import build_shaped_model; print(build_shaped_model(
  'tests/data/model-configs/meta-llama__Llama-3.2-1B-Instruct.json', '$W/llama-1b'))"
python3 -c "from llmprod.tinymodel import corpus_split; t, e = corpus_split(); open('$W/calib.txt','w').write(t); open('$W/eval.txt','w').write(e + '\n\n' + t)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv"
for m in gptq awq; do
  /usr/bin/time -v python3 -m llmprod quantize "$W/llama-1b" --method $m --output "$W/llama-1b-$m" --device cuda \
    --dataset "$W/calib.txt" --num-samples 64 --seq-len 1024 --json > "$OUT/quantize-$m.json" 2> "$OUT/quantize-$m.err" \
    || { tail -30 "$OUT/quantize-$m.err"; exit 1; }
  grep -E "Maximum resident|Elapsed" "$OUT/quantize-$m.err" || true
done
python3 -m llmprod perplexity "$W/llama-1b-gptq" --baseline "$W/llama-1b" --dataset "$W/eval.txt" --seq-len 2048 \
  --device cuda --json > "$OUT/perplexity.json" 2> "$OUT/perplexity.err" || { tail -30 "$OUT/perplexity.err"; exit 1; }
python3 -m llmprod perplexity "$W/llama-1b-awq" --dataset "$W/eval.txt" --seq-len 2048 --device cuda --batch-size 4 \
  --json > "$OUT/perplexity-awq.json" 2>> "$OUT/perplexity.err" || { tail -30 "$OUT/perplexity.err"; exit 1; }
python3 benchmarks/perplexity_bench.py --out "$OUT/perplexity-bench-gpu.json" --device cuda --repeats 3 \
  --model "$W/llama-1b" --max-tokens 65536 --work "$W" 2>&1 | tail -8
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ("quantize-gptq", "quantize-awq", "perplexity", "perplexity-awq"):
    d = json.loads((out / f"{name}.json").read_text())
    keep = ("method", "seconds", "peak_gpu_memory_bytes", "peak_host_memory_bytes", "size_bytes_after",
            "perplexity", "tokens_per_s", "peak_gpu_memory_bytes", "device", "dtype", "increase")
    print(name, {k: d[k] for k in keep if k in d})
PY
