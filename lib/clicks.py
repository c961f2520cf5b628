"""Clicks as the clients send them, checked, moved onto the model grid, and turned into guidance channels.

The stock 3D Slicer module (and OHIF's point tools) send a DeepEdit model its clicks as request keys named
after the labels, in voxel indices of the image as the client loaded it::

    {"pancreas": [[i, j, k], ...], "tumor": [...], "background": [...]}

:func:`parse_clicks` refuses what cannot be a click (400): an unknown label name (OHIF's points placed before a
label is chosen arrive under ``null``), a non-integer or out-of-bounds coordinate, too many clicks. It needs only
the image's shape, which the interactive task reads from the file's header, so a bad request is refused before
any image work. :func:`to_model_grid` moves them through the *same* geometry as
the image (input voxel -> world -> model voxel, from the two affines), so clicks land where the annotator put
them whatever the file's orientation (LPS, permuted axes) or spacing; an upstream bug that reoriented the image
but not the clicks (MONAI Label #1407) put them on the wrong side of the body.

The guidance is one channel per class, background included (DeepEdit's layout): a Gaussian bump of
``sigma_mm`` around each click, peak 1, combined by maximum, cut at 3 sigma. Training (click simulation) and
inference build it with the same function, :func:`paint_clicks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from lib.errors import InputError

BACKGROUND = "background"
DEFAULT_SIGMA_MM = 5.0
MAX_CLICKS = 200  # per request, all labels together
NO_LABEL_KEYS = ("null", "undefined", "none", "")  # what a client's missing label name turns into


@dataclass(frozen=True)
class Clicks:
    """Click positions per class value (0 = background), in voxel indices of some grid."""

    points: dict[int, tuple[tuple[float, float, float], ...]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.points.values())

    def __bool__(self) -> bool:
        return self.count > 0

    def pairs(self) -> set[tuple[int, tuple[float, float, float]]]:
        return {(c, tuple(p)) for c, pts in self.points.items() for p in pts}

    @classmethod
    def from_pairs(cls, pairs) -> "Clicks":
        """Clicks from ``(class, point)`` pairs, classes in ascending order, points in the order given."""
        points: dict[int, list] = {}
        for c, p in pairs:
            points.setdefault(int(c), []).append(tuple(float(v) for v in p))
        return cls({c: tuple(points[c]) for c in sorted(points)})


def click_names(labels: Mapping[str, int]) -> dict[str, int]:
    """Label name -> class value for every name a click may carry (the task's labels and ``background``)."""
    return {BACKGROUND: 0, **{name: int(v) for name, v in labels.items()}}


def _is_point_list(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(p, (list, tuple)) for p in value)


def _coordinate(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"click coordinates must be whole voxel indices; '{name}' has {value!r}", 400)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InputError(f"click coordinates must be whole voxel indices; '{name}' has {value!r}", 400)
    return int(value)


def parse_clicks(request: Mapping, labels: Mapping[str, int], shape: Sequence[int] | None,
                 max_clicks: int = MAX_CLICKS) -> Clicks:
    """The clicks of a request, checked against the input image ``shape`` (voxel indices i, j, k; None: every
    check but the bounds, for an image whose shape is not known before it is loaded).

    A request key holds clicks when it is a label name (or ``background``), or when its value is a list of
    points; a list of points under another name is refused (an unknown label), so a typo never goes unnoticed.
    Points under a key that names no label at all (``null``, ``undefined``, ``None``, empty: a client that sent
    points before a label was chosen) are refused whatever their form."""
    names = click_names(labels)
    shape = tuple(int(s) for s in shape) if shape is not None else None
    points: dict[int, list[tuple[float, float, float]]] = {}
    total = 0
    for key, value in request.items():
        if not isinstance(key, str):
            continue
        if key not in names:
            if key.strip().lower() in NO_LABEL_KEYS and value not in (None, "", [], (), {}):
                raise InputError(f"clicks under '{key}' name no label (points placed before a label was chosen?): "
                                 f"choose one of {', '.join(names)} and click again", 400)
            if _is_point_list(value):
                raise InputError(f"clicks for unknown label '{key}': clicks may name {', '.join(names)}", 400)
            continue
        if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
            continue
        if not _is_point_list(value):
            raise InputError(f"'{key}' must be a list of [i, j, k] voxel indices, got {str(value)[:80]!r}", 400)
        for p in value:
            if len(p) != 3:
                raise InputError(f"a click has 3 voxel indices [i, j, k]; '{key}' has {list(p)!r}", 400)
            ijk = tuple(_coordinate(v, key) for v in p)
            if shape is not None and any(not 0 <= v < s for v, s in zip(ijk, shape)):
                raise InputError(f"click {list(ijk)} of '{key}' lies outside the image (voxel indices 0..{[s - 1 for s in shape]})",
                                 400)
            points.setdefault(names[key], []).append(tuple(float(v) for v in ijk))
            total += 1
    if total > max_clicks:
        raise InputError(f"{total} clicks in one request, over the limit of {max_clicks}", 400)
    return Clicks({c: tuple(dict.fromkeys(p)) for c, p in sorted(points.items())})


def to_model_grid(clicks: Clicks, input_affine: np.ndarray, model_affine: np.ndarray,
                  model_shape: Sequence[int]) -> Clicks:
    """Input voxel indices -> (fractional) model-grid voxel indices through world coordinates, clipped to the grid."""
    m = np.linalg.inv(np.asarray(model_affine, dtype=np.float64)) @ np.asarray(input_affine, dtype=np.float64)
    hi = np.asarray(model_shape, dtype=np.float64) - 1
    out = {}
    for c, pts in clicks.points.items():
        arr = np.c_[np.asarray(pts, dtype=np.float64).reshape(-1, 3), np.ones(len(pts))]
        moved = np.clip((m @ arr.T)[:3].T, 0, hi)
        out[c] = tuple(tuple(float(v) for v in p) for p in moved)
    return Clicks(out)


def sigma_voxels(sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    return np.asarray([float(sigma_mm) / float(s) for s in spacing], dtype=np.float64)


def paint_clicks(guidance: torch.Tensor, clicks: Clicks, sigma_vox: Sequence[float], offset: Sequence[int] = (0, 0, 0)) -> torch.Tensor:
    """Paint ``clicks`` (grid indices) into ``guidance`` (C, x, y, z) in place, for the box of the grid that starts
    at ``offset``: channel c is the maximum of Gaussian bumps (peak 1, cut at 3 sigma) around the clicks of class c."""
    sig = np.asarray(sigma_vox, dtype=np.float64)
    radius = np.ceil(3 * sig).astype(int)
    shape = np.asarray(guidance.shape[1:])
    for c, pts in clicks.points.items():
        if c >= guidance.shape[0]:
            continue
        for p in pts:
            centre = np.asarray(p, dtype=np.float64) - np.asarray(offset, dtype=np.float64)
            lo = np.maximum(np.floor(centre).astype(int) - radius, 0)
            hi = np.minimum(np.floor(centre).astype(int) + radius + 1, shape)
            if np.any(hi <= lo):
                continue
            axes = [torch.exp(-0.5 * ((torch.arange(lo[a], hi[a], dtype=torch.float32) - float(centre[a])) / float(sig[a])) ** 2)
                    for a in range(3)]
            bump = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
            region = guidance[c, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            torch.maximum(region, bump.to(region.device, region.dtype), out=region)
    return guidance


class WithGuidance(torch.nn.Module):
    """An interactive network run with no clicks: its guidance channels are zero (the automatic mode)."""

    def __init__(self, net: torch.nn.Module, channels: int):
        super().__init__()
        self.net, self.channels = net, int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = x.new_zeros((x.shape[0], self.channels, *x.shape[2:]))
        return self.net(torch.cat([x, zeros], 1))


def guidance_box(clicks: Clicks, num_classes: int, lo: Sequence[int], hi: Sequence[int], sigma_vox) -> torch.Tensor:
    """Guidance channels (num_classes, box) of the grid box [lo, hi)."""
    size = [int(h) - int(l) for l, h in zip(lo, hi)]
    g = torch.zeros((num_classes, *size), dtype=torch.float32)
    return paint_clicks(g, clicks, sigma_vox, offset=lo)
