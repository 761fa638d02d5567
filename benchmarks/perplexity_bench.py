"""`llmprod perplexity`'s scoring loop against the plain reference loop: tokens/s and peak memory.

Same model, same text, same windows and batch size; each run in its own process (so peak RSS is
its own), alternating, median of --repeats. The model has a Llama-3-sized vocabulary (128,256 rows)
so the [batch, seq, vocab] float32 logits the reference materialises are as large as in practice.

    python benchmarks/perplexity_bench.py --out benchmarks/results/perplexity-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import median, run_measured  # noqa: E402

CHILD = r'''
import json, resource, sys, time, psutil, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmprod.evaluate.perplexity import compute_perplexity, plan_windows, tokenize_once
from llmprod.evaluate.reference import reference_perplexity
variant, model_dir, text_file, seq_len, batch, device = sys.argv[1:7]
seq_len, batch = int(seq_len), int(batch)
torch.set_num_threads(torch.get_num_threads())
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
ids, _ = tokenize_once(AutoTokenizer.from_pretrained(model_dir), open(text_file).read())
ids = ids[: int(sys.argv[7])]
plan = plan_windows(len(ids), seq_len)
ids = ids[: len(plan.windows) * seq_len]
after_load = psutil.Process().memory_info().rss
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); gpu_base = torch.cuda.memory_allocated()
t = time.perf_counter()
if variant == "llmprod":
    nll, _ = compute_perplexity(model, ids, plan, batch_size=batch)
    import math; ppl = math.exp(nll / plan.scored)
else:
    ppl = reference_perplexity(model, ids, seq_len, batch_size=batch)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"perplexity": ppl, "tokens": len(plan.windows) * seq_len, "seconds": seconds,
                  "tokens_per_s": len(plan.windows) * seq_len / seconds,
                  "scoring_rss_bytes": peak - after_load,
                  "peak_gpu_bytes": (torch.cuda.max_memory_allocated() - gpu_base) if device == "cuda" else None}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/bench"))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16 * 2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, help="an existing model directory (default: build one)")
    args = parser.parse_args()

    from llmprod.tinymodel import RANDOM, cached_tiny_model, corpus_split

    spec = replace(RANDOM, hidden_size=256, intermediate_size=768, padded_vocab_size=128_256)
    model = args.model or cached_tiny_model(args.work, spec)
    text = args.work / "perplexity-text.txt"
    text.write_text("\n\n".join(corpus_split()))
    runs = {"llmprod": [], "reference": []}
    for _ in range(args.repeats):
        for variant in runs:  # alternate, so drift on a shared machine hits both alike
            cmd = [sys.executable, "-c", CHILD, variant, str(model), str(text), str(args.seq_len),
                   str(args.batch_size), args.device, str(args.max_tokens)]
            runs[variant].append(json.loads(run_measured(cmd)["stdout"]))
    summary = {}
    for variant, rs in runs.items():
        summary[variant] = {
            "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
            "scoring_rss_bytes": median([r["scoring_rss_bytes"] for r in rs]),
            "peak_gpu_bytes": median([r["peak_gpu_bytes"] for r in rs]) if rs[0]["peak_gpu_bytes"] else None,
            "perplexity": rs[0]["perplexity"],
            "tokens": rs[0]["tokens"],
        }
    a, b = summary["llmprod"], summary["reference"]
    result = {
        "command": " ".join(["python", "benchmarks/perplexity_bench.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "device": args.device},
        "model": {"path": str(model), "vocab_size": 128_256, "hidden_size": 256, "layers": 4},
        "seq_len": args.seq_len, "batch_size": args.batch_size, "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "llmprod": a, "reference": b,
        "ratios": {
            "speed (llmprod / reference tokens/s)": a["tokens_per_s"] / b["tokens_per_s"],
            "scoring memory (llmprod / reference, RSS above the loaded model)":
                a["scoring_rss_bytes"] / b["scoring_rss_bytes"],
            **({"peak GPU memory (llmprod / reference)": a["peak_gpu_bytes"] / b["peak_gpu_bytes"]}
               if a["peak_gpu_bytes"] else {}),
            "perplexity relative difference": abs(a["perplexity"] - b["perplexity"]) / b["perplexity"],
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
