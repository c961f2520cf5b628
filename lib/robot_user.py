"""A deterministic robot annotator for interactive models: where a careful user would click next.

For the class being corrected, the error regions are its missed voxels (reference has the class, the
prediction does not) and its false positives (the prediction has it, the reference does not). The next click goes
to the largest error region (by volume), at its point deepest inside (largest distance to the region's border,
in mm; of several equally deep points, the one nearest their centre). A missed region gets a click of the class; a false positive gets a click
of what the reference says is there (the background, or the other class). The same inputs give the same click.

NoC@x (number of clicks to reach Dice x) is the field's measure (DeepEdit, SW-FastEdit, nnInteractive):
the clicks taken until the class's Dice reaches x, or the cap when it never does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from lib.metrics import dice  # the robot user's Dice (1.0 when both are empty), importable here for the benchmarks

__all__ = ["clicks_to_reach", "dice", "next_click"]


def next_click(pred: np.ndarray, truth: np.ndarray, value: int, spacing: Sequence[float] = (1.0, 1.0, 1.0),
               ) -> tuple[int, tuple[int, int, int]] | None:
    """(class value of the click, voxel index) of the next click correcting class ``value``; None when no error."""
    missed = (truth == value) & (pred != value)
    extra = (pred == value) & (truth != value)
    best = None  # (size, is_missed, slices, component id, labels)
    for is_missed, mask in ((True, missed), (False, extra)):
        if not mask.any():
            continue
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), is_missed, ndimage.find_objects(labels)[k], k + 1, labels)
    if best is None:
        return None
    _, is_missed, box, comp, labels = best
    box = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, labels.shape))
    region = labels[box] == comp
    dist = ndimage.distance_transform_edt(region, sampling=spacing)
    deepest = np.argwhere(dist >= dist.max() - 1e-6)  # a plateau in a slab-shaped region: take its middle
    local = deepest[int(np.argmin(((deepest - deepest.mean(0)) ** 2).sum(1)))]
    point = tuple(int(i + s.start) for i, s in zip(local, box))
    return (int(value) if is_missed else int(truth[point])), point


def clicks_to_reach(curve: Sequence[float], target: float, cap: int = 20) -> int:
    """NoC@target of a Dice curve (index k: Dice after k clicks): the first k reaching ``target``, else ``cap``."""
    for k, d in enumerate(curve):
        if k > cap:
            break
        if d >= target:
            return k
    return cap
