"""Sliding-window inference on the model grid: the full pass, and the coarse-to-fine fast path.

Fast path (``--conf fast_path true``, the default):

1. **Body box**: the bounding box of tissue (scaled intensity > ``body_threshold``, i.e. above about -73 HU)
   on the model grid; air around the patient is never fed to the network.
2. **Coarse pass**: the same network at the model spacing over the body box, windows without overlap and
   constant blending (the fewest windows that cover it). It only has to *find* the pancreas.
3. **Fine pass**: Gaussian-blended sliding window (``fine_overlap``, default the profile's overlap) over the
   bounding box of everything the coarse pass labelled, grown by ``margin_mm`` and to at least one window
   so the network sees the same context as in a full pass. Nothing outside it is labelled.

Only the fine region's class scores are kept (C x region, on the model grid); the label on the input grid
is produced slab by slab from them by :func:`restore_label`, which also restricts the resampling to the
input voxels that fall inside the region. The full-size probability map at input resolution is never built.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from lib.transforms.restore import SLAB_VOXELS, model_to_input_matrix, resample_argmax

logger = logging.getLogger(__name__)


@dataclass
class FastPathOptions:
    enabled: bool = True
    coarse_overlap: float = 0.0
    fine_overlap: float | None = None  # None: the profile's sw_overlap
    margin_mm: float = 24.0
    body_threshold: float = 0.05  # on the 0..1 scaled image (HU window -87..199): about -73 HU
    body_margin_mm: float = 8.0


@dataclass
class ModelGridScores:
    """Class scores (C, x, y, z) of a box of the model grid that starts at ``offset`` (voxels)."""

    scores: torch.Tensor
    offset: tuple[int, int, int]
    stats: dict


def configure_threads(num_threads: int | None) -> int:
    """``num_threads`` > 0 sets torch's intra-op threads (default: torch's choice, the physical cores)."""
    if num_threads and int(num_threads) > 0 and torch.get_num_threads() != int(num_threads):
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def _window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    n = 1
    for s, r in zip(shape, roi):
        if s <= r:
            continue
        stride = max(1, int(r * (1 - overlap)))
        n *= math.ceil((s - r) / stride) + 1
    return n


def sliding_window(
    image: torch.Tensor,
    forward: Callable,
    roi_size: Sequence[int],
    sw_batch_size: int,
    overlap: float,
    mode: str = "gaussian",
    device=None,
    sw_device=None,
) -> torch.Tensor:
    """(C_in, x, y, z) image -> (C, x, y, z) fp32 scores, stitched on ``device`` (default: the image's)."""
    inferer = SlidingWindowInferer(
        roi_size=tuple(int(r) for r in roi_size), sw_batch_size=int(sw_batch_size), overlap=float(overlap), mode=mode,
        sw_device=sw_device, device=device,
    )
    with torch.no_grad():
        out = inferer(image[None], forward)
    return out[0].float()


def _box(lo: np.ndarray, hi: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.clip(np.floor(lo).astype(int), 0, None)
    hi = np.minimum(np.ceil(hi).astype(int), np.asarray(shape))
    return lo, hi


def _grow_to(lo: np.ndarray, hi: np.ndarray, size: Sequence[int], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Grow [lo, hi) symmetrically to at least ``size`` along each axis, inside [0, shape)."""
    lo, hi = lo.copy(), hi.copy()
    for a in range(3):
        need = int(size[a]) - (hi[a] - lo[a])
        if need > 0:
            lo[a] -= need // 2
            hi[a] += need - need // 2
            if lo[a] < 0:
                hi[a] -= lo[a]
                lo[a] = 0
            if hi[a] > shape[a]:
                lo[a] = max(0, lo[a] - (hi[a] - shape[a]))
                hi[a] = shape[a]
    return lo, hi


def mask_box(mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """[lo, hi) voxel bounds of a boolean (x, y, z) mask, or None if empty."""
    if not bool(mask.any()):
        return None
    bounds = []
    for a in range(3):
        other = tuple(b for b in range(3) if b != a)
        idx = torch.nonzero(mask.any(dim=other[1]).any(dim=other[0]), as_tuple=False)[:, 0]
        bounds.append((int(idx.min()), int(idx.max()) + 1))
    return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])


def body_box(image: torch.Tensor, threshold: float, margin_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of voxels above ``threshold`` (``image``: (C, x, y, z)), grown by ``margin_vox``."""
    shape = np.asarray(image.shape[1:])
    box = mask_box(image[0] > threshold)
    if box is None:
        return np.zeros(3, int), shape
    return _box(box[0] - margin_vox, box[1] + margin_vox, shape)


def full_pass(image, forward, roi_size, sw_batch_size, overlap, device=None, sw_device=None) -> ModelGridScores:
    start = time.time()
    scores = sliding_window(image, forward, roi_size, sw_batch_size, overlap, "gaussian", device, sw_device)
    shape = tuple(image.shape[1:])
    return ModelGridScores(scores, (0, 0, 0), {
        "mode": "full", "grid": list(shape), "windows": _window_count(shape, roi_size, overlap),
        "seconds": round(time.time() - start, 2)})


def fast_pass(
    image: torch.Tensor,
    forward: Callable,
    roi_size: Sequence[int],
    sw_batch_size: int,
    overlap: float,
    spacing: Sequence[float],
    opts: FastPathOptions | None = None,
    device=None,
    sw_device=None,
) -> ModelGridScores:
    """Coarse-to-fine inference of ``image`` (C_in, x, y, z) on the model grid; see the module docstring."""
    opts = opts or FastPathOptions()
    start = time.time()
    shape = np.asarray(image.shape[1:])
    spacing = np.asarray(spacing, dtype=np.float64)
    roi = np.asarray(roi_size, dtype=int)
    fine_overlap = overlap if opts.fine_overlap is None else opts.fine_overlap

    b_lo, b_hi = body_box(image, opts.body_threshold, np.ceil(opts.body_margin_mm / spacing))
    b_lo, b_hi = _grow_to(b_lo, b_hi, roi, shape)
    body = image[:, b_lo[0]:b_hi[0], b_lo[1]:b_hi[1], b_lo[2]:b_hi[2]]
    coarse = sliding_window(body, forward, roi, sw_batch_size, opts.coarse_overlap, "constant", device, sw_device)
    fg = coarse.argmax(0) > 0
    stats = {
        "mode": "fast", "grid": shape.tolist(), "body_box": [b_lo.tolist(), b_hi.tolist()],
        "coarse_windows": _window_count(b_hi - b_lo, roi, opts.coarse_overlap),
        "coarse_seconds": round(time.time() - start, 2),
    }
    box = mask_box(fg)
    if box is None:  # nothing to refine: the coarse pass says background everywhere
        stats.update(fine_windows=0, seconds=round(time.time() - start, 2))
        return ModelGridScores(coarse, tuple(int(v) for v in b_lo), stats)
    del coarse
    margin = np.ceil(opts.margin_mm / spacing)
    f_lo, f_hi = _box(box[0] + b_lo - margin, box[1] + b_lo + margin, shape)
    f_lo, f_hi = _grow_to(f_lo, f_hi, roi, shape)
    region = image[:, f_lo[0]:f_hi[0], f_lo[1]:f_hi[1], f_lo[2]:f_hi[2]]
    t_fine = time.time()
    scores = sliding_window(region, forward, roi, sw_batch_size, fine_overlap, "gaussian", device, sw_device)
    stats.update(
        fine_box=[f_lo.tolist(), f_hi.tolist()], fine_windows=_window_count(f_hi - f_lo, roi, fine_overlap),
        fine_seconds=round(time.time() - t_fine, 2), seconds=round(time.time() - start, 2),
    )
    return ModelGridScores(scores, tuple(int(v) for v in f_lo), stats)


def restore_label(
    scores: torch.Tensor,
    offset: Sequence[int],
    model_affine: np.ndarray,
    input_affine: np.ndarray,
    input_shape: Sequence[int],
    slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:
    """uint8 label on the input grid from class scores of a box of the model grid starting at ``offset``.

    Same sampling as :func:`lib.transforms.restore.resample_argmax` (trilinear, then argmax; outside the box
    background), but only the input voxels whose position falls inside the box are resampled.
    """
    input_shape = tuple(int(s) for s in input_shape)
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(offset, dtype=np.float64)
    box_affine = np.asarray(model_affine, dtype=np.float64) @ shift
    # input voxel indices of the box corners (one voxel of slack for trilinear support)
    to_box = model_to_input_matrix(box_affine, input_affine)  # input index -> box index
    to_input = np.linalg.inv(to_box)
    n = np.asarray(scores.shape[1:], dtype=np.float64)
    corners = np.array([[x, y, z, 1.0] for x in (-1.0, n[0]) for y in (-1.0, n[1]) for z in (-1.0, n[2])])
    idx = (to_input @ corners.T)[:3].T
    lo = np.clip(np.floor(idx.min(0)).astype(int), 0, input_shape)
    hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 0, input_shape)
    out = np.zeros(input_shape, dtype=np.uint8)
    if np.any(hi <= lo):
        return out
    sub = np.eye(4)
    sub[:3, 3] = lo
    sub_affine = np.asarray(input_affine, dtype=np.float64) @ sub
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = resample_argmax(
        scores, box_affine, sub_affine, tuple(int(v) for v in hi - lo), slab_voxels)
    return out
