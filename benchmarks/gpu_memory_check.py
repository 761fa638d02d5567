"""`llmprod estimate-memory` against what a GPU actually allocates.

    python benchmarks/gpu_memory_check.py MODEL_DIR [MODEL_DIR ...] --out results.json

For each model: the weights' GPU memory after transformers loads it (torch.cuda.memory_allocated), and a
paged KV cache allocated with the predicted shape (one [2, blocks, 16, kv_heads, head_dim] tensor per
layer, vLLM's layout, the block count `estimate-memory` predicts for --gpu-memory), beside the
prediction. The KV check is arithmetic made real (dtype, heads, head size, layer count); the weights
check compares the estimate with what transformers materialises, quantized checkpoints included.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch


def estimate(model: str, gpu_memory: str, context: int, batch: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "llmprod", "estimate-memory", model, "--gpu-memory", gpu_memory,
                           "--context", str(context), "--batch", str(batch), "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure_weights(model: str) -> int:
    from transformers import AutoModelForCausalLM

    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    loaded = AutoModelForCausalLM.from_pretrained(model, dtype="auto", device_map="cuda")
    used = torch.cuda.memory_allocated() - before
    del loaded
    gc.collect()
    torch.cuda.empty_cache()
    return used


def measure_kv(config: dict, num_blocks: int, block_size: int, dtype: torch.dtype) -> int:
    text = config.get("text_config", config)
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    cache = [torch.empty((2, num_blocks, block_size, kv_heads, head_dim), dtype=dtype, device="cuda")
             for _ in range(text["num_hidden_layers"])]
    used = torch.cuda.memory_allocated() - before
    del cache
    torch.cuda.empty_cache()
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--gpu-memory", default="80GiB")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for model in args.models:
        plan = estimate(model, args.gpu_memory, args.context, args.batch)
        weights = measure_weights(model)
        config = json.loads((Path(model) / "config.json").read_text())
        block_size = plan["block_size"]
        blocks = plan["num_blocks"]
        dtype = torch.bfloat16  # the models' dtype; estimate-memory's KV dtype defaults to it
        kv = measure_kv(config, blocks, block_size, dtype)
        rows.append({
            "model": model,
            "weights_predicted_bytes": plan["weights_bytes"], "weights_measured_bytes": weights,
            "weights_ratio": round(weights / plan["weights_bytes"], 4),
            "kv_blocks": blocks, "kv_predicted_bytes": plan["kv_cache_bytes"], "kv_measured_bytes": kv,
            "kv_ratio": round(kv / plan["kv_cache_bytes"], 4),
            "kv_bytes_per_token_predicted": plan["kv_bytes_per_token"],
        })
        print(json.dumps(rows[-1]))
    args.out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "gpu": torch.cuda.get_device_name(),
                                    "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
