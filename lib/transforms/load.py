"""Load a CT volume and refuse what the model cannot segment, with a message that says why.

Checks run on the header before the voxels are read where the format allows (NIfTI, NRRD), so an
absurdly large volume is refused without allocating it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from lib.errors import InputError
from lib.transforms.nifti_reader import FastNiftiReader

logger = logging.getLogger(__name__)

DEFAULT_MAX_VOXELS = 400_000_000  # 512 x 512 x 1525; about 1.6 GB as float32


@dataclass(frozen=True)
class InputLimits:
    """What the server accepts; every value is a ``--conf`` option (see README)."""

    max_voxels: int = DEFAULT_MAX_VOXELS  # of the input, and of the input resampled to the model spacing
    min_slices: int = 8  # fewer voxels than this along any axis is treated as a 2-D image
    check_hu: bool = True  # refuse images whose intensities are not Hounsfield units
    max_sw_batch_size: int = 64  # windows per network call a request may ask for
    max_windows: int = 2000  # sliding-window windows of one request (a 512x512x300 CT at 2 mm and 0.25: 36)
    max_overlap: float = 0.95  # sliding-window overlap a request may ask for


def _header_shape(path: str) -> tuple[int, ...] | None:
    lower = path.lower()
    try:
        if lower.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            return tuple(int(s) for s in nib.load(path).header.get_data_shape())
        if lower.endswith(".nrrd"):
            import nrrd

            return tuple(int(s) for s in nrrd.read_header(path)["sizes"])
    except Exception as exc:
        raise InputError(f"cannot read image header of '{os.path.basename(path)}': {exc}", 422) from exc
    return None


def check_shape(shape: tuple[int, ...], name: str, limits: InputLimits) -> tuple[int, ...]:
    """Return the 3-D spatial shape, or raise for 2-D / 4-D / oversized inputs."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:  # (X, Y, Z, 1) NIfTIs are 3-D volumes
        dims.pop()
    if len(dims) > 3:
        raise InputError(
            f"'{name}' is a {len(dims)}-D image of shape {tuple(shape)}: send one 3-D CT volume, not a series of volumes",
            422,
        )
    if len(dims) < 3 or min(dims) < limits.min_slices:
        raise InputError(
            f"'{name}' has shape {tuple(shape)}: a 3-D CT volume with at least {limits.min_slices} voxels along every "
            "axis is required (2-D images and single slices cannot be segmented by this 3-D model)",
            422,
        )
    n = int(np.prod(dims, dtype=np.int64))
    if n > limits.max_voxels:
        raise InputError(
            f"'{name}' has {n:,} voxels {tuple(dims)}, over the server's limit of {limits.max_voxels:,} "
            "(--conf max_voxels)",
            413,
        )
    return tuple(dims)


def check_hu_range(image: np.ndarray | torch.Tensor, name: str) -> None:
    """A CT in Hounsfield units holds air or fat (< -300 HU) and soft tissue (> 0 HU); MR or normalised images do not."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    flat = arr.reshape(-1)
    step = max(1, flat.size // 2_000_000)
    sample = flat[::step].astype(np.float32)
    if not np.isfinite(sample).all():
        raise InputError(f"'{name}' contains NaN or infinite values", 422)
    lo, hi = float(sample.min()), float(sample.max())
    if lo > -300.0 or hi < 0.0 or hi - lo < 200.0:
        raise InputError(
            f"'{name}' has intensities {lo:.4g}..{hi:.4g}, which are not CT Hounsfield units (expected air/fat below "
            "-300 HU and soft tissue above 0 HU). Send a CT with its rescale slope/intercept applied, or set "
            "--conf check_hu false to skip this check",
            422,
        )


class LoadCTd(MapTransform):
    """``LoadImaged`` with input validation; records the input geometry for the exact inversion at the end."""

    def __init__(self, keys="image", limits: InputLimits | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.limits = limits or InputLimits()
        self.loader = LoadImage(FastNiftiReader(), image_only=True, ensure_channel_first=False, dtype=np.float32)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            src = d[key]
            if isinstance(src, (MetaTensor, torch.Tensor, np.ndarray)):
                img = src if isinstance(src, MetaTensor) else MetaTensor(torch.as_tensor(src))
                name = "image"
            else:
                path = str(src)
                name = os.path.basename(path.rstrip("/")) or path
                if not os.path.exists(path):
                    raise InputError(f"image file not found: '{name}'", 404)
                if os.path.isfile(path):
                    if os.path.getsize(path) == 0:
                        raise InputError(f"'{name}' is empty", 422)
                    shape = _header_shape(path)
                    if shape is not None:
                        check_shape(shape, name, self.limits)
                try:
                    img = self.loader(path)
                except Exception as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise InputError(f"cannot read image '{name}' (corrupt, truncated or unsupported): {reason}", 422) from exc
            spatial = check_shape(tuple(img.shape), name, self.limits)
            img = img.reshape(spatial) if tuple(img.shape) != spatial else img
            if self.limits.check_hu:
                check_hu_range(img, name)
            affine = np.asarray(img.affine, dtype=np.float64)
            if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
                raise InputError(f"'{name}' has a degenerate orientation/spacing (affine {affine.tolist()})", 422)
            d[key] = img
            d[f"{key}_input_affine"] = affine
            d[f"{key}_input_shape"] = spatial
        return d


def check_resampled_size(shape: tuple[int, ...], affine: np.ndarray, spacing, limits: InputLimits, name="image") -> None:
    """Refuse inputs whose resampled grid would be absurd (e.g. a header claiming 1 m voxels)."""
    voxel = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    extent = np.asarray(shape, dtype=np.float64) * voxel
    n = int(np.prod(np.ceil(extent / np.asarray(spacing, dtype=np.float64))))
    if n > limits.max_voxels:
        raise InputError(
            f"'{name}' covers {extent.round(1).tolist()} mm; resampled to {list(spacing)} mm it would have {n:,} voxels, "
            f"over the limit of {limits.max_voxels:,} (--conf max_voxels)",
            413,
        )


class CheckResampledSized:
    """Refuse inputs whose grid at the model spacing would be absurdly large."""

    def __init__(self, spacing, limits: InputLimits, key: str = "image"):
        self.spacing, self.limits, self.key = spacing, limits, key

    def __call__(self, data):
        check_resampled_size(data[f"{self.key}_input_shape"], data[f"{self.key}_input_affine"], self.spacing, self.limits)
        return data
