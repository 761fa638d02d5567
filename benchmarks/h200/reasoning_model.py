"""The tiny Llama-architecture model with <think> and </think> in its vocabulary, for vLLM's DeepSeek-R1
reasoning parser (it needs both tokens; without </think> in the output, all of it is reasoning):

    python benchmarks/h200/reasoning_model.py DEST

Random weights: served with `--load-format dummy`, only the config and the tokenizer matter.
"""

from __future__ import annotations

import subprocess
import sys


def main(dest: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    subprocess.run([sys.executable, "-m", "llmprod", "tiny-model", dest, "--random", "--json"], check=True,
                   stdout=subprocess.DEVNULL)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    tokenizer.add_tokens(["<think>", "</think>"], special_tokens=True)
    model = AutoModelForCausalLM.from_pretrained(dest)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    print(f"{dest}: vocabulary {len(tokenizer)}, <think> = {tokenizer.convert_tokens_to_ids('<think>')}")


if __name__ == "__main__":
    main(sys.argv[1])
