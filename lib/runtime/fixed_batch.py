"""One input shape for compiled models: a sliding window's batches of any size fed as batches of one fixed size."""

from __future__ import annotations

from typing import Callable

import torch


class FixedBatch:
    """Feeds the model batches of exactly ``batch`` items (larger ones in chunks, the last one padded), so compiled
    models (CUDA graphs, TensorRT, the CPU package) always see one shape, whatever ``sw_batch_size`` a request asks."""

    def __init__(self, model: Callable, batch: int):
        self.model, self.batch = model, int(batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(0, x.shape[0], self.batch):
            chunk = x[i:i + self.batch]
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))], 0)
            outs.append(self.model(chunk)[:n].float())
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
