"""The plain perplexity loop that tests and benchmarks check `llmprod perplexity` against.

Deliberately naive: the model's own forward with full [batch, seq, vocab] logits in float32, then
cross-entropy over positions 1..seq_len-1 of each non-overlapping window.
"""

from __future__ import annotations

import math
from typing import Sequence


def reference_perplexity(model, ids: Sequence[int], seq_len: int, batch_size: int = 1) -> float:
    import torch

    device = next(model.parameters()).device
    n_windows = len(ids) // seq_len
    data = torch.tensor(ids[: n_windows * seq_len], dtype=torch.long).view(n_windows, seq_len)
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in range(0, n_windows, batch_size):
            batch = data[b:b + batch_size].to(device)
            logits = model(input_ids=batch).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += batch[:, 1:].numel()
    return math.exp(total / count)
