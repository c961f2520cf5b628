"""Drop small stray foreground components: the pancreas is one organ (sometimes seen in two or three large
pieces), and the tumour lies in it.

With a sliding-window overlap of 0.25 (the ``cpu`` profile) a few small blobs far from the pancreas, scored
by one window only, come out as pancreas or tumour; the bundle's 0.625 overlap averages most of them away at
2.7x the windows. Dropping every foreground component (pancreas and tumour together, 26-connected) smaller
than ``min_fraction`` of the largest removes them for a fraction of a second. Keeping only the largest (as
nnU-Net's post-processing can) is too much: the model sometimes splits the pancreas into two large pieces
and would lose one. Measured on phantoms (README, "Fast inference"). It works on the class scores of the
model grid, before the restore, so the restore samples only the kept components.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from lib.transforms.scores import foreground

_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected
DEFAULT_MIN_FRACTION = 0.25


def parse_min_fraction(value) -> float:
    """``min_component_fraction`` as given in ``--conf`` or a request, as a float in 0..1 (else ValueError)."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"min_component_fraction must be a number from 0 to 1, got {value!r}")
    return fraction


def bounding_slices(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of a boolean mask grown by ``margin`` voxels (inside the array), None if empty.
    Labelling or dilating only this box gives the same answer as the whole grid, which is mostly background."""
    slices = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def small_components(fg: np.ndarray, min_fraction: float = DEFAULT_MIN_FRACTION) -> tuple[np.ndarray, int]:
    """Mask of the voxels of ``fg`` (boolean x, y, z) in connected components with fewer than ``min_fraction`` x
    the largest component's voxels, and how many such components there are."""
    out = np.zeros(fg.shape, dtype=bool)
    box = bounding_slices(fg)
    if box is None or min_fraction <= 0:
        return out, 0
    components, n = ndimage.label(fg[box], structure=_CONNECTIVITY)
    if n <= 1:
        return out, 0
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    small = sizes < float(min_fraction) * sizes.max()
    small[0] = False
    out[box] = small[components]
    return out, int(small.sum())


def drop_small_components(scores: torch.Tensor, min_fraction: float = DEFAULT_MIN_FRACTION) -> tuple[torch.Tensor, int]:
    """``scores`` (C, x, y, z; channel 0 background, softmax probabilities) with the foreground classes zeroed in
    every connected component of the argmax foreground with fewer than ``min_fraction`` x the largest one's
    voxels; returns the scores and the number of components dropped. ``min_fraction`` 0 keeps everything, 1 only
    the largest."""
    drop, n = small_components(foreground(scores).cpu().numpy(), min_fraction)
    if n == 0:
        return scores, 0
    scores = scores.clone()
    scores[1:].masked_fill_(torch.from_numpy(drop).to(scores.device), 0.0)  # background (>= 0 after softmax) wins
    return scores, n


class DropSmallComponentsd:
    """:func:`drop_small_components` on ``pred``; the number of dropped components goes into ``inference``."""

    def __init__(self, key: str = "pred", min_fraction: float = DEFAULT_MIN_FRACTION):
        self.key, self.min_fraction = key, float(min_fraction)

    def __call__(self, data):
        d = dict(data)
        d[self.key], dropped = drop_small_components(d[self.key], self.min_fraction)
        if isinstance(d.get("inference"), dict):
            d["inference"] = {**d["inference"], "components_dropped": dropped}
        return d
