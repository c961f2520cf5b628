"""Per-class Dice on label volumes: the number every report and test in this project quotes."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray, value, empty: float = 1.0) -> float:
    """The one Dice of the project: of the voxels equal to ``value`` (``True`` for boolean masks) in both volumes.

    When the class is absent from both, the answer is ``empty``: 1.0 by default (nothing to find, nothing found:
    a robot user's curve and a test of an empty answer count it as right). Averages over images pass
    ``empty=nan`` (see :func:`dice_per_class`), so a class an image does not have gives no evidence either way
    instead of a free 1.0."""
    p, t = np.asarray(pred) == value, np.asarray(truth) == value
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def dice_per_class(pred: np.ndarray, truth: np.ndarray, class_names: dict[int, str] | None = None,
                   empty: float = float("nan")) -> dict[str, float]:
    """Dice of every label of a task (``task.class_names``; default: the pancreas task's). A class absent from
    both is NaN by default: validation and the reports average per class over images and skip those."""
    if class_names is None:
        from lib.task import get_task

        class_names = get_task("pancreas").class_names
    return {name: dice(pred, truth, value, empty) for value, name in class_names.items()}


def mean_ignoring_nan(values) -> float:
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")
