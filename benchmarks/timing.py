"""One timing rule for the benchmarks: a warm-up call (oneDNN and OpenVINO build their kernels on the first one),
then the median of ``reps`` calls, so one busy moment of a shared machine does not move the figure."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_seconds(fn: Callable, x, reps: int) -> float:
    """Median wall-clock seconds of ``fn(x)`` over ``reps`` calls after one warm-up, without autograd."""
    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
