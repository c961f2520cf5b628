"""Training and validation transforms shared by the search, the trainer and the offline fitter.

They follow the model-zoo bundles' ``train.yaml``: the task's preprocessing (:mod:`lib.transforms.preprocessing`, the
same as inference), class-balanced crops drawn from per-class masks dilated by the task's ``crop_radius_mm``
(pancreas: 48 mm, so windows around the small tumour are drawn as often as pancreas and background windows;
spleen: 0, the spleen bundle's one positive to one negative crop), light spatial and intensity augmentation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    SpatialPadd,
)
from scipy import ndimage

from lib.transforms.preprocessing import ct_preprocessing
from lib.task import SegmentationTask


class DilatedClassMasksd(MapTransform):
    """``label4crop``: one channel per class, each class mask dilated by ``radius_mm`` (bundle: 48 voxels at 1 mm)."""

    def __init__(self, label_key: str = "label", output_key: str = "label4crop", num_classes: int = 3,
                 radius_mm: float = 48.0):
        super().__init__(label_key)
        self.label_key, self.output_key, self.num_classes, self.radius_mm = label_key, output_key, num_classes, radius_mm

    def __call__(self, data):
        d = dict(data)
        label = d[self.label_key]
        arr = np.asarray(label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else label)[0]
        spacing = np.sqrt((np.asarray(label.affine)[:3, :3] ** 2).sum(axis=0)) if hasattr(label, "affine") else np.ones(3)
        channels = []
        for k in range(self.num_classes):
            mask = arr == k
            if not mask.any():
                channels.append(np.zeros_like(mask, dtype=np.uint8))
                continue
            if k == 0 or self.radius_mm <= 0:
                channels.append(mask.astype(np.uint8))  # background is everywhere anyway; radius 0: the class itself
                continue
            dist = ndimage.distance_transform_edt(~mask, sampling=spacing)
            channels.append((dist <= self.radius_mm).astype(np.uint8))
        d[self.output_key] = np.stack(channels)
        return d


def preprocessing(task: SegmentationTask, spacing: Sequence[float], roi_size: Sequence[int], load: bool = True,
                  with_crop_masks: bool = True) -> list:
    """Deterministic part (cacheable): the task's preprocessing of image and label, crop masks, pad to the crop."""
    keys = ["image", "label"]
    ts = ct_preprocessing(task, spacing, keys, loader="plain" if load else None)
    ts.append(CastToTyped(keys=keys, dtype=(np.float32, np.uint8)))
    if with_crop_masks:
        ts += [
            DilatedClassMasksd("label", "label4crop", num_classes=task.num_classes, radius_mm=task.crop_radius_mm),
            # constant (0: the bottom of the HU window, air-like): reflect padding fails on scans thinner than half
            # the crop (a 20-slice series at the model spacing) and would mirror anatomy without its label
            SpatialPadd(keys=["image", "label", "label4crop"], spatial_size=tuple(roi_size), mode="constant"),
        ]
    return ts


def augmentation(task: SegmentationTask, roi_size: Sequence[int], num_samples: int = 1, flip_prob: float = 0.5) -> list:
    """Random part: class-balanced crops and the bundle's augmentations (``flip_prob`` 0 keeps left/right cues)."""
    keys = ["image", "label"]
    return [
        RandCropByLabelClassesd(keys=keys, label_key="label4crop", num_classes=task.num_classes, ratios=list(task.ratios),
                                spatial_size=tuple(roi_size), num_samples=num_samples, warn=False),
        DeleteItemsd(keys="label4crop"),
        RandRotated(keys=keys, range_x=0.3, range_y=0.3, range_z=0.3, mode=("bilinear", "nearest"), prob=0.2),
        RandZoomd(keys=keys, min_zoom=0.8, max_zoom=1.2, mode=("trilinear", "nearest"), align_corners=(True, None), prob=0.16),
        RandGaussianSmoothd(keys="image", sigma_x=(0.5, 1.15), sigma_y=(0.5, 1.15), sigma_z=(0.5, 1.15), prob=0.15),
        RandScaleIntensityd(keys="image", factors=0.3, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianNoised(keys="image", std=0.01, prob=0.15),
        RandFlipd(keys=keys, spatial_axis=0, prob=flip_prob),
        RandFlipd(keys=keys, spatial_axis=1, prob=flip_prob),
        RandFlipd(keys=keys, spatial_axis=2, prob=flip_prob),
        CastToTyped(keys=keys, dtype=(torch.float32, torch.uint8)),
        EnsureTyped(keys=keys, track_meta=False),
    ]


def val_transforms(task: SegmentationTask, spacing, load=True) -> Compose:
    return Compose(preprocessing(task, spacing, (1, 1, 1), load=load, with_crop_masks=False))
