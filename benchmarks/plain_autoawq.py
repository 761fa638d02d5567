"""The legacy reference: AutoAWQ on the same token samples (AWQ GEMM format).

    python benchmarks/plain_autoawq.py MODEL_DIR OUT_DIR SAMPLES.json SEQ_LEN
"""

import json
import sys

from awq import AutoAWQForCausalLM
from transformers import AutoTokenizer

model_dir, out_dir, samples_file, seq_len = sys.argv[1:5]
samples = json.load(open(samples_file))
model = AutoAWQForCausalLM.from_pretrained(model_dir, device_map="cpu")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model.quantize(tokenizer, quant_config={"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"},
               calib_data=samples, max_calib_samples=len(samples), max_calib_seq_len=int(seq_len),
               n_parallel_calib_samples=None)
model.save_quantized(out_dir)
tokenizer.save_pretrained(out_dir)
import torch  # noqa: E402

print(json.dumps({"peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None}))
