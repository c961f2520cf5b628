"""Boundary refinement on the image's own voxel grid: which side of the organ's surface each boundary voxel is on.

The network runs on the profile's 2 mm grid and its scores are resampled back to the image; at the organ's
surface that loses what the CT itself says there. A voxel half pancreas, half fat has an intermediate HU *on
the image's grid* (partial volume), and whether the reference counts it in is decided there; after resampling
to another grid that evidence is smeared over neighbours. On held-out phantoms nearly all the errors left after
the automatic pass are one voxel thick, on the surface, as many missed as extra (README, *Interactive
annotation*), and a click cannot fix them: they are scattered over the whole surface.

The refiner is a logistic model over a 3 x 3 x 3 neighbourhood of the image's own voxels: the CT (HU,
shifted and scaled) and the current foreground (pancreas or tumour), plus the voxel's signed distance to the
foreground's surface (voxels, clipped). It decides only in the band of ``band`` voxels on either side of that
surface and only between pancreas and background: tumour voxels are never changed, a voxel it adds becomes
pancreas. Its weights come from ``scripts/train_boundary_refiner.py`` (phantoms the network never saw) and
record the voxel spacings it was fitted on; it refuses other spacings (a 3-voxel neighbourhood of 0.8 mm voxels
is another thing than one of 2 mm voxels), and the caller then keeps the label as it was. It works on a view of
the volume in RAS axis order (:func:`ras_view`), so a file stored LPS or with permuted axes gets the same answer.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lib.transforms.components import bounding_slices

_S26 = np.ones((3, 3, 3), dtype=bool)
SD_CLIP = 3.0  # signed distance feature, voxels


def surface_band(fg: np.ndarray, band: int) -> np.ndarray:
    """The voxels within ``band`` voxels (26-connected) of the surface of ``fg``, on either side; a box edge that
    cuts through the foreground is not a surface."""
    return ndimage.binary_dilation(fg, _S26, iterations=band) & ~ndimage.binary_erosion(
        fg, _S26, iterations=band, border_value=1)


def signed_distance(fg: np.ndarray) -> np.ndarray:
    """Distance to the surface of ``fg`` in voxels, negative inside, clipped to +-SD_CLIP (the refiner's feature)."""
    sd = ndimage.distance_transform_edt(~fg) - ndimage.distance_transform_edt(fg)
    return np.clip(sd, -SD_CLIP, SD_CLIP).astype(np.float32)


def ras_view(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A view (no copy: writing into it writes into ``array``) of a volume with its axes in R, A, S order and
    direction, from the voxel-to-world ``affine`` (RAS world, as nibabel's)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))  # per array axis: world axis, sign
    view = array
    for axis, (_, sign) in enumerate(ornt):
        if sign < 0:
            view = np.flip(view, axis)
    return view.transpose(np.argsort(ornt[:, 0]))


@dataclass
class BoundaryRefiner:
    """A fitted refiner: ``kernel`` (2, 3, 3, 3) over (scaled HU, foreground), ``sd_weight``, ``bias``; ``pancreas``
    is the label value it decides against the background (1: the pancreas, or the organ of a one-organ task)."""

    kernel: torch.Tensor
    sd_weight: float
    bias: float
    hu_offset: float = 60.0
    hu_scale: float = 100.0
    band: int = 1
    spacing_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spacing_max: tuple[float, float, float] = (np.inf, np.inf, np.inf)
    pancreas: int = 1
    checksum: str = ""

    # ---- files ---------------------------------------------------------------------------------
    def state(self, **meta) -> dict:
        return {"kernel": self.kernel.float().clone(), "sd_weight": float(self.sd_weight), "bias": float(self.bias),
                "hu_offset": self.hu_offset, "hu_scale": self.hu_scale, "band": self.band,
                "spacing_min": [float(v) for v in self.spacing_min], "spacing_max": [float(v) for v in self.spacing_max],
                "pancreas": self.pancreas, "meta": meta}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BoundaryRefiner":
        with open(path, "rb") as f:
            raw = f.read()
        s = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        kernel = torch.as_tensor(s["kernel"], dtype=torch.float32)
        if tuple(kernel.shape) != (2, 3, 3, 3):
            raise ValueError(f"{path}: a boundary refiner's kernel is (2, 3, 3, 3), not {tuple(kernel.shape)}")
        return cls(kernel=kernel, sd_weight=float(s["sd_weight"]), bias=float(s["bias"]),
                   hu_offset=float(s["hu_offset"]), hu_scale=float(s["hu_scale"]), band=int(s["band"]),
                   spacing_min=tuple(float(v) for v in s["spacing_min"]),
                   spacing_max=tuple(float(v) for v in s["spacing_max"]), pancreas=int(s["pancreas"]),
                   checksum=hashlib.sha256(raw).hexdigest()[:12])

    # ---- use -----------------------------------------------------------------------------------
    def accepts(self, spacing: Sequence[float]) -> bool:
        """Whether the image's voxel spacing (mm, per axis, sorted so that the orientation does not matter) lies
        within what the refiner was fitted on."""
        sp = np.sort(np.asarray(spacing, dtype=np.float64))
        return bool(np.all(sp >= np.sort(self.spacing_min) - 1e-6) and np.all(sp <= np.sort(self.spacing_max) + 1e-6))

    def refine(self, image: np.ndarray, label: np.ndarray, affine: np.ndarray, editable: np.ndarray | None = None,
               keep: np.ndarray | None = None) -> int:
        """Refine ``label`` in place (input grid, the same shape as ``image`` in HU, voxel-to-world ``affine``);
        return the voxels changed. ``editable``: where it may write (default: everywhere); ``keep``: voxels it
        must not change (clicks)."""
        image, label = ras_view(image, affine), ras_view(label, affine)
        editable = ras_view(editable, affine) if editable is not None else None
        keep = ras_view(keep, affine) if keep is not None else None
        box = bounding_slices(label > 0, margin=self.band + 2)
        if box is not None and editable is not None:  # only around where it may write
            near = bounding_slices(editable, margin=self.band + 2)
            box = None if near is None else tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(box, near))
        if box is None or any(s.stop <= s.start for s in box):
            return 0
        region = label[box]
        fg = region > 0
        if not fg.any():
            return 0
        band = surface_band(fg, self.band) & np.isin(region, (0, self.pancreas))  # never a tumour voxel
        if editable is not None:
            band &= editable[box]
        if keep is not None:
            band &= ~keep[box]
        if not band.any():
            return 0
        p = self.probability(image[box], fg)
        new = np.where(p > 0.5, self.pancreas, 0).astype(region.dtype)
        flip = band & (new != region)
        region[flip] = new[flip]
        return int(flip.sum())

    def probability(self, image: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """P(foreground) of every voxel of a box, from its CT and current foreground (see the module docstring)."""
        x = torch.from_numpy(np.stack([(image.astype(np.float32) - self.hu_offset) / self.hu_scale,
                                       fg.astype(np.float32)]))[None]
        x = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
        logit = F.conv3d(x, self.kernel[None].float())[0, 0].numpy()
        logit += self.sd_weight * signed_distance(fg) + self.bias
        return 1.0 / (1.0 + np.exp(-logit))


def band_samples(image: np.ndarray, label: np.ndarray, affine: np.ndarray, band: int, hu_offset: float = 60.0,
                 hu_scale: float = 100.0, pancreas: int = 1):
    """Training samples of one image: per band voxel the 27 scaled HU, the 27 foreground values and the clipped
    signed distance (the refiner's features, in its kernel's order), and the voxel indices *in the RAS view*
    (index ``ras_view(reference, affine)`` with them)."""
    image, label = ras_view(image, affine), ras_view(label, affine)
    box = bounding_slices(label > 0, margin=band + 2)
    if box is None:
        return np.zeros((0, 55), np.float32), np.zeros((0, 3), int)
    fg = label[box] > 0
    idx = np.argwhere(surface_band(fg, band) & np.isin(label[box], (0, pancreas)))
    hu = np.pad((image[box].astype(np.float32) - hu_offset) / hu_scale, 1, mode="edge")
    f = np.pad(fg.astype(np.float32), 1, mode="edge")
    cols = []
    for vol in (hu, f):
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    cols.append(vol[idx[:, 0] + a, idx[:, 1] + b, idx[:, 2] + c])
    cols.append(signed_distance(fg)[tuple(idx.T)])
    offset = np.array([s.start for s in box])
    return np.stack(cols, 1).astype(np.float32), idx + offset
