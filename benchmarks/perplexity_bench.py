"""`llmprod perplexity`'s scoring loop against the plain reference loop: tokens/s and peak memory.

Same model, same text, same windows, each at its defaults: the reference one window a pass with full
float32 logits, `llmprod perplexity` with --batch-size auto; both in the dtype the CLI picks (bfloat16
on a GPU, float32 on a CPU). Each run in its own process (so peak memory is its own), alternating,
median of --repeats. The built model has a Llama-3-sized vocabulary (128,256 rows) so the
[batch, seq, vocab] float32 logits the reference materialises are as large as in practice; --model
takes a real shape (the H200 runs use Llama-3.2-1B and Llama-3.1-8B shapes with random weights).

--variants adds runs beside the two: `llmprod-bN` (a fixed batch of N windows) and `llmprod-eager`
(eager attention instead of SDPA) and `llmprod-compile` (the decoder through torch.compile; its compile
time is the run's warmup_seconds), to show where the defaults come from. Each run reports the model
TFLOPS it reached (matmul and attention FLOPs of the tokens scored, over the timed seconds): against the
GPU's dense peak, that is how much room a faster loop could still find.

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
import json, math, resource, sys, time, psutil, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from llmprod.evaluate.perplexity import compute_perplexity, plan_windows, tokenize_once
from llmprod.evaluate.reference import reference_perplexity
variant, model_dir, text_file, seq_len, batch, device, max_tokens, dtype = sys.argv[1:9]
seq_len = int(seq_len)
dtype = getattr(torch, dtype)
attn = "eager" if variant.endswith("-eager") else "sdpa"
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn).to(device).eval()
# Model FLOPs per token: 2 per weight of every matmul (the output head included), plus causal attention's
# scores and weighted sum, 2 * seq_len * (heads * head_dim) a layer averaged over the positions.
cfg = model.config
head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
flops_per_token = (2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
                   + 2 * seq_len * cfg.num_attention_heads * head_dim * cfg.num_hidden_layers)
if variant.endswith("-compile"):
    model.model = torch.compile(model.model)  # the decoder; the head and the loss stay as they are
ids, _ = tokenize_once(AutoTokenizer.from_pretrained(model_dir), open(text_file).read())
ids = ids[: int(max_tokens)]
plan = plan_windows(len(ids), seq_len)
ids = ids[: len(plan.windows) * seq_len]
after_load = psutil.Process().memory_info().rss
if variant.startswith("llmprod"):
    from llmprod.evaluate.perplexity import auto_batch_size
    batch = int(variant.split("-b")[1]) if "-b" in variant else auto_batch_size(model, seq_len, len(plan.windows))
    def score(ids, plan):
        nll, _ = compute_perplexity(model, ids, plan, batch_size=batch)
        return math.exp(nll / plan.scored)
else:
    batch = int(batch)
    def score(ids, plan):
        return reference_perplexity(model, ids, seq_len, batch_size=batch)
# One untimed pass first (kernel loading, cuBLAS heuristics, the allocator's pools), as a long gate amortises.
warm = time.perf_counter()
score(ids[: batch * seq_len], plan_windows(batch * seq_len, seq_len))
if device == "cuda":
    torch.cuda.synchronize()
warmup_seconds = time.perf_counter() - warm
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); gpu_base = torch.cuda.memory_allocated()
t = time.perf_counter()
ppl = score(ids, plan)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"perplexity": ppl, "batch_size": batch, "dtype": str(dtype), "tokens": len(plan.windows) * seq_len, "seconds": seconds,
                  "tokens_per_s": len(plan.windows) * seq_len / seconds, "warmup_seconds": warmup_seconds,
                  "model_tflops": flops_per_token * len(plan.windows) * seq_len / seconds / 1e12,
                  "scoring_rss_bytes": peak - after_load,
                  "peak_gpu_bytes": (torch.cuda.max_memory_allocated() - gpu_base) if device == "cuda" else None}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/bench"))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=1, help="the reference's windows per pass")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on a CPU (the CLI's)")
    parser.add_argument("--variants", default="", help="more runs beside the two, e.g. llmprod-b1,llmprod-eager")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16 * 2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, help="an existing model directory (default: build one)")
    args = parser.parse_args()

    from llmprod.tinymodel import RANDOM, cached_tiny_model, corpus_split

    spec = replace(RANDOM, hidden_size=256, intermediate_size=768, padded_vocab_size=128_256)
    model = args.model or cached_tiny_model(args.work, spec)
    args.work.mkdir(parents=True, exist_ok=True)
    text = args.work / "perplexity-text.txt"
    text.write_text("\n\n".join(corpus_split() * 4))  # about 600k tokens of the tiny tokenizer: room for --max-tokens
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device.startswith("cuda") else "float32")
    runs = {v: [] for v in ["llmprod", "reference", *filter(None, args.variants.split(","))]}
    for _ in range(args.repeats):
        for variant in runs:  # alternate, so drift on a shared machine hits both alike
            cmd = [sys.executable, "-c", CHILD, variant, str(model), str(text), str(args.seq_len),
                   str(args.batch_size), args.device, str(args.max_tokens), dtype]
            runs[variant].append(json.loads(run_measured(cmd)["stdout"]))
    summary = {}
    for variant, rs in runs.items():
        summary[variant] = {
            "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
            "model_tflops": median([r["model_tflops"] for r in rs]),
            "warmup_seconds": median([r["warmup_seconds"] for r in rs]),
            "scoring_rss_bytes": median([r["scoring_rss_bytes"] for r in rs]),
            "peak_gpu_bytes": median([r["peak_gpu_bytes"] for r in rs]) if rs[0]["peak_gpu_bytes"] else None,
            "perplexity": rs[0]["perplexity"],
            "tokens": rs[0]["tokens"],
            "batch_size": rs[0]["batch_size"],
        }
    a, b = summary["llmprod"], summary["reference"]
    config = json.loads((Path(model) / "config.json").read_text())
    result = {
        "command": " ".join(["python", "benchmarks/perplexity_bench.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "device": args.device},
        "model": {"path": str(model), **{k: config.get(k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}},
        "seq_len": args.seq_len, "dtype": dtype, "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "llmprod": a, "reference": b,
        "reference_model_tflops": b["model_tflops"],
        "ratios": {
            "speed (llmprod / reference tokens/s)": a["tokens_per_s"] / b["tokens_per_s"],
            "scoring memory (llmprod / reference, RSS above the loaded model)":
                a["scoring_rss_bytes"] / b["scoring_rss_bytes"],
            **({"peak GPU memory (llmprod / reference)": a["peak_gpu_bytes"] / b["peak_gpu_bytes"]}
               if a["peak_gpu_bytes"] else {}),
            "perplexity relative difference": abs(a["perplexity"] - b["perplexity"]) / b["perplexity"],
        },
        "variants (tokens/s and peak memory against the reference)": {
            v: {"batch_size": summary[v]["batch_size"], "speed": summary[v]["tokens_per_s"] / b["tokens_per_s"],
                "model_tflops": summary[v]["model_tflops"],
                **({"peak_gpu_memory": summary[v]["peak_gpu_bytes"] / b["peak_gpu_bytes"]}
                   if b["peak_gpu_bytes"] else {})}
            for v in summary if v != "reference"},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
