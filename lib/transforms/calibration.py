"""Calibration windows for reduced-precision inference (:mod:`lib.runtime.reduced_precision`): a few images of a
folder, preprocessed exactly as an inference preprocesses them (the task's orientation, spacing and window), each
cut to one window of the model's size around the image centre (padded where the image is smaller)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch

from lib.task import SegmentationTask

EXTENSIONS = (".nii.gz", ".nii", ".nrrd")


class CalibrationImages:
    def __init__(self, folder: str | os.PathLike, task: SegmentationTask, spacing: Sequence[float],
                 roi_size: Sequence[int], max_images: int = 3):
        self.folder, self.task = Path(folder), task
        self.spacing, self.roi_size = tuple(float(s) for s in spacing), tuple(int(r) for r in roi_size)
        self.files = sorted(p for p in self.folder.glob("*") if p.is_file() and p.name.endswith(EXTENSIONS))[:max_images]

    def identity(self) -> str:
        """What the verdict depends on: the images (names and sizes), the window, the spacing."""
        parts = [f"{p.name}:{p.stat().st_size}" for p in self.files]
        parts += [str(self.task.hu_window), str(self.task.orientation), str(self.spacing)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def windows(self, in_channels: int = 1) -> list[tuple[str, torch.Tensor]]:
        """(image name, a (1, in_channels, *roi) window); extra channels (an interactive model's guidance) are zero."""
        from monai.transforms import Compose

        from lib.transforms.preprocessing import ct_preprocessing

        pre = Compose(ct_preprocessing(self.task, self.spacing, loader="plain"))
        out = []
        for path in self.files:
            image = torch.as_tensor(pre({"image": str(path)})["image"]).float()  # (1, x, y, z)
            window = torch.zeros((1, *self.roi_size))
            src, dst = [], []
            for size, roi in zip(image.shape[1:], self.roi_size):
                start = max(0, (size - roi) // 2)
                n = min(size, roi)
                offset = (roi - n) // 2
                src.append(slice(start, start + n))
                dst.append(slice(offset, offset + n))
            window[(slice(None), *dst)] = image[(slice(None), *src)]
            extra = torch.zeros((in_channels - 1, *self.roi_size))
            out.append((path.name, torch.cat([window, extra], 0)[None]))
        return out
