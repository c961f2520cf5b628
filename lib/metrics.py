"""Per-class Dice on label volumes: the number every report and test in this project quotes."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, value: int) -> float:
    """Dice of one class; NaN when the class is absent from both (no evidence either way)."""
    p, t = np.asarray(pred) == value, np.asarray(truth) == value
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def dice_per_class(pred: np.ndarray, truth: np.ndarray, class_names: dict[int, str] | None = None) -> dict[str, float]:
    """Dice of every label of a task (``task.class_names``; default: the pancreas task's)."""
    if class_names is None:
        from lib.task import get_task

        class_names = get_task("pancreas").class_names
    return {name: dice(pred, truth, value) for value, name in class_names.items()}


def mean_ignoring_nan(values) -> float:
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")
