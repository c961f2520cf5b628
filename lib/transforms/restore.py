"""Map the model-grid prediction back onto the input's exact voxel grid, slab by slab.

The bundle inverts the full-resolution probability map with ``Invertd`` and then takes the argmax, which
materialises C float channels at input resolution (about 1 GB for a 512x512x300 CT) and costs seconds per
volume. Here each slab of input slices is sampled from the model-grid probabilities (trilinear) and reduced to
its argmax at once, so only one slab of probabilities exists at a time and the result is ``uint8`` on the input
grid, with the input's shape and affine whatever its orientation or spacing.

Most of a CT is background, and need not be sampled at all: trilinear sampling takes a convex combination of
8 model voxels, so where background wins at all 8 (score_bg >= score_c at each) it wins in the combination
too. :func:`restore_label` therefore samples only the input voxels whose 8 neighbours on the model grid touch
a foreground component; the result is the same label as sampling every voxel, at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lib.transforms.components import bounding_slices
from lib.transforms.scores import class_argmax, foreground

SLAB_VOXELS = 8_000_000  # input voxels sampled per step: bounds the transient memory to ~0.2 GB for 3 classes


def model_to_input_matrix(model_affine: np.ndarray, input_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix taking input voxel indices to model-grid voxel indices (both affines voxel -> world)."""
    return np.linalg.inv(np.asarray(model_affine, dtype=np.float64)) @ np.asarray(input_affine, dtype=np.float64)


def resample_argmax(
    scores: torch.Tensor,
    model_affine: np.ndarray,
    input_affine: np.ndarray,
    input_shape: tuple[int, int, int],
    slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:
    """Trilinearly resample ``scores`` (C, X, Y, Z on the model grid) to the input grid and argmax to uint8."""
    scores = scores.float()
    c, mx, my, mz = scores.shape
    m = torch.as_tensor(model_to_input_matrix(model_affine, input_affine), dtype=torch.float64)
    sx, sy, sz = (int(s) for s in input_shape)
    out = np.zeros((sx, sy, sz), dtype=np.uint8)
    vol = scores.unsqueeze(0)  # (1, C, X, Y, Z) -> grid_sample's (N, C, D, H, W) with D=X, H=Y, W=Z
    norm = torch.tensor([mz - 1, my - 1, mx - 1], dtype=torch.float64).clamp(min=1)
    ii, jj = torch.meshgrid(torch.arange(sx, dtype=torch.float64), torch.arange(sy, dtype=torch.float64), indexing="ij")
    base = m[:3, 0, None, None] * ii + m[:3, 1, None, None] * jj + m[:3, 3, None, None]  # (3, X, Y)
    step = max(1, slab_voxels // max(1, sx * sy))
    for z0 in range(0, sz, step):
        ks = torch.arange(z0, min(sz, z0 + step), dtype=torch.float64)
        coords = base[:, :, :, None] + m[:3, 2, None, None, None] * ks  # (3, X, Y, k) model voxel indices
        grid = torch.stack((coords[2], coords[1], coords[0]), dim=-1)  # (X, Y, k, 3) as (W, H, D) order
        grid = (2.0 * grid / norm - 1.0).to(scores.dtype).unsqueeze(0).to(scores.device)
        sampled = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        out[:, :, z0 : z0 + len(ks)] = class_argmax(sampled).cpu().numpy()
    return out


def foreground_boxes(scores: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """[lo, hi) voxel boxes of the foreground (argmax > 0) of ``scores`` (C, x, y, z), one per connected component
    of the foreground grown by one voxel (so that neighbouring bits share a box)."""
    fg = foreground(scores).cpu().numpy()
    box = bounding_slices(fg, margin=1)  # the dilation reaches one voxel beyond the foreground, no further
    if box is None:
        return []
    grown = ndimage.binary_dilation(fg[box], structure=np.ones((3, 3, 3), bool))
    labels, _ = ndimage.label(grown)
    lo = np.array([s.start for s in box])
    return [(lo + [s.start for s in sl], lo + [s.stop for s in sl]) for sl in ndimage.find_objects(labels)]


def input_box(lo, hi, to_input: np.ndarray, input_shape, input_affine) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """[lo, hi) of the input voxels that can sample the model-grid box [lo, hi) trilinearly (its box widened by
    one voxel below, mapped to input indices through ``to_input`` and rounded outwards), and the affine of that
    sub-grid of the input; None when empty."""
    corners = np.array([[x, y, z, 1.0] for x in (lo[0] - 1.0, hi[0]) for y in (lo[1] - 1.0, hi[1]) for z in (lo[2] - 1.0, hi[2])])
    idx = (to_input @ corners.T)[:3].T
    shape = np.asarray(input_shape)
    out_lo = np.clip(np.floor(idx.min(0)).astype(int), 0, shape)
    out_hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 0, shape)
    if np.any(out_hi <= out_lo):
        return None
    sub = np.eye(4)
    sub[:3, 3] = out_lo
    return out_lo, out_hi, np.asarray(input_affine, dtype=np.float64) @ sub


def restore_label(
    scores: torch.Tensor,
    offset,
    model_affine: np.ndarray,
    input_affine: np.ndarray,
    input_shape,
    slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:
    """uint8 label on the input grid from class scores of a box of the model grid starting at ``offset``.

    The label :func:`resample_argmax` gives (trilinear, then argmax; outside the box background), computed only
    for the input voxels whose trilinear support reaches a foreground component (see the module docstring).
    """
    input_shape = tuple(int(s) for s in input_shape)
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(offset, dtype=np.float64)
    box_affine = np.asarray(model_affine, dtype=np.float64) @ shift
    to_input = np.linalg.inv(model_to_input_matrix(box_affine, input_affine))  # box index -> input index
    out = np.zeros(input_shape, dtype=np.uint8)
    for f_lo, f_hi in foreground_boxes(scores):
        # an input voxel at box position u samples floor(u) and floor(u) + 1: it can leave the background only if
        # u lies in [f_lo - 1, f_hi); map that box's corners to input indices (rounded outwards)
        found = input_box(f_lo, f_hi, to_input, input_shape, input_affine)
        if found is None:
            continue
        lo, hi, sub_affine = found
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = resample_argmax(
            scores, box_affine, sub_affine, tuple(int(v) for v in hi - lo), slab_voxels)
    return out


class RestoreLabeld:
    """``pred``: class scores of a box of the model grid (``pred_offset``) -> uint8 label on the input grid."""

    def __init__(self, key: str = "pred", ref_key: str = "image"):
        self.key, self.ref_key = key, ref_key

    def __call__(self, data):
        d = dict(data)
        ref = d[self.ref_key]
        d[self.key] = restore_label(
            d[self.key], d.get(f"{self.key}_offset", (0, 0, 0)), np.asarray(ref.affine, dtype=np.float64),
            d[f"{self.ref_key}_input_affine"], d[f"{self.ref_key}_input_shape"],
        )
        d[f"{self.key}_affine"] = d[f"{self.ref_key}_input_affine"]
        return d
