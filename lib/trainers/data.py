"""Data loaders of the train tasks, from the shared transforms of :mod:`lib.transforms.train`."""

from __future__ import annotations

import torch

from lib.task import SegmentationTask


def train_loader(task: SegmentationTask, items: list[dict], spacing, crop, num_samples: int, batch_size: int, flip_prob: float,
                 num_workers: int, seed: int):
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose

    from lib.transforms.train import augmentation, preprocessing

    transform = Compose(preprocessing(task, spacing, crop) + augmentation(task, crop, num_samples=num_samples, flip_prob=flip_prob))
    transform.set_random_state(seed=seed)
    ds = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=None, progress=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def val_loader(task: SegmentationTask, items: list[dict], spacing, num_workers: int = 0):
    from monai.data import CacheDataset, DataLoader

    from lib.transforms.train import val_transforms

    ds = CacheDataset(items, transform=val_transforms(task, spacing), cache_rate=1.0, num_workers=None, progress=False)
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=num_workers)
