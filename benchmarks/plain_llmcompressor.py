"""The reference: a plain llm-compressor script, as its examples write one (no llmprod code).

    python benchmarks/plain_llmcompressor.py MODEL_DIR {gptq,awq} OUT_DIR SAMPLES.json SEQ_LEN
"""

import json
import sys

from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
from llmcompressor.modifiers.transform import AWQModifier
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, method, out_dir, samples_file, seq_len = sys.argv[1:6]
samples = json.load(open(samples_file))
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
data = Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]})
if method == "gptq":
    recipe = [GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])]
else:
    recipe = [AWQModifier(duo_scaling=True),
              QuantizationModifier(targets="Linear", scheme="W4A16_ASYM", ignore=["lm_head"])]
if method == "awq":
    # The same CPU-only pin_memory bug llmprod works around (llmprod/quantize/compat.py).
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache
    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None
oneshot(model=model, dataset=data, recipe=recipe, max_seq_length=int(seq_len),
        num_calibration_samples=len(samples), shuffle_calibration_samples=False, pipeline="sequential")
model.save_pretrained(out_dir, save_compressed=True)
tokenizer.save_pretrained(out_dir)
import torch  # noqa: E402

print(json.dumps({"peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None}))
