"""Map the model-grid prediction back onto the input's exact voxel grid, slab by slab.

The bundle inverts the full-resolution probability map with ``Invertd`` and then takes the argmax, which
materialises C float channels at input resolution (about 1 GB for a 512x512x300 CT). Here each slab of
input slices is sampled from the model-grid probabilities (trilinear) and reduced to its argmax at once,
so only one slab of probabilities exists at a time and the result is ``uint8`` on the input grid, with the
input's shape and affine whatever its orientation or spacing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform

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
        out[:, :, z0 : z0 + len(ks)] = sampled.argmax(dim=0).to(torch.uint8).cpu().numpy()
    return out


class RestoreLabeld(MapTransform):
    """Replace ``pred`` (class scores on the model grid) by the uint8 label on the input grid."""

    def __init__(self, keys="pred", ref_key: str = "image"):
        super().__init__(keys)
        self.ref_key = ref_key

    def __call__(self, data):
        d = dict(data)
        ref = d[self.ref_key]
        model_affine = np.asarray(ref.affine, dtype=np.float64)
        for key in self.key_iterator(d):
            d[key] = resample_argmax(d[key], model_affine, d[f"{self.ref_key}_input_affine"], d[f"{self.ref_key}_input_shape"])
            d[f"{key}_affine"] = d[f"{self.ref_key}_input_affine"]
        return d
