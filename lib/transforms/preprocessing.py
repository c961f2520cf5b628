"""The one CT preprocessing of a task, shared by inference, training, the search, scoring and benchmarks.

load -> channel first -> the task's orientation -> the model spacing (bilinear for the image, nearest for a
label) -> the task's HU window scaled to 0..1 (clipped). Built from the task definition alone, so what the
network sees at inference is what it was trained on (``tests/unit/test_tasks.py`` checks the tensors).

It lives in :mod:`lib.transforms` beside the transforms it chains, so the training transforms
(:mod:`lib.transforms.train`) build on it without importing anything above the transforms package.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged

from lib.task import AXIS_LABELS, SegmentationTask
from lib.transforms.load import CheckResampledSized, InputLimits, LoadCTd
from lib.transforms.spacing import SafeSpacingd


def ct_preprocessing(task: SegmentationTask, spacing: Sequence[float], keys: Sequence[str] = ("image",),
                     loader: str | None = "checked", limits: InputLimits | None = None) -> list:
    """Transforms for ``keys`` (``"image"``, optionally ``"label"``).

    ``loader``: ``"checked"`` reads the image with :class:`LoadCTd` (refuses unreadable, huge or non-CT input
    with a clear message and records the input grid for the exact inversion) and checks the resampled size;
    ``"plain"`` is MONAI's ``LoadImaged`` (training data, already checked when it was labelled); ``None`` when
    the data are in memory already."""
    keys = list(keys)
    limits = limits or InputLimits()
    ts: list = []
    if loader == "checked":
        ts += [LoadCTd(keys="image", limits=limits), CheckResampledSized(spacing, limits)]
        if len(keys) > 1:
            ts.append(LoadImaged(keys=[k for k in keys if k != "image"], image_only=True))
    elif loader == "plain":
        ts.append(LoadImaged(keys=keys, image_only=True))
    elif loader is not None:
        raise ValueError(f"loader must be 'checked', 'plain' or None, got {loader!r}")
    modes = tuple("bilinear" if k == "image" else "nearest" for k in keys)
    # the image is resampled in float32 (MONAI's default is float64: 0.51 -> 0.30 s for a 512x512x181 CT, at most
    # 0.05 HU apart); labels keep float64 coordinates, so that no nearest-neighbour tie moves a label voxel
    dtypes = tuple(torch.float32 if k == "image" else torch.float64 for k in keys)
    ts += [
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        Orientationd(keys=keys, axcodes=task.orientation, labels=AXIS_LABELS),
        SafeSpacingd(keys=keys, pixdim=tuple(spacing), mode=modes if len(modes) > 1 else modes[0],
                     dtype=dtypes if len(dtypes) > 1 else dtypes[0]),
        ScaleIntensityRanged(keys="image", a_min=task.hu_window[0], a_max=task.hu_window[1], b_min=0.0, b_max=1.0, clip=True),
    ]
    return ts
