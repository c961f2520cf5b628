"""Tiny synthetic studies and training parameters for the in-process training tests (tests/unit/test_train.py)
and the server ones that train (tests/server/test_train_server.py, test_data_safety_process.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_SEARCH = {"epochs": 3, "warmup_epochs": 1, "val_interval": 1, "channel_mul": 0.25, "num_blocks": 4, "num_depths": 3,
               "crop_size": 32, "val_roi_size": 32, "sw_overlap": 0.25}
TINY_TRAIN = {"epochs": 2, "val_interval": 1, "crop_size": 32, "val_roi_size": 32, "sw_overlap": 0.25, "batch_size": 1,
              "publish_policy": "best"}


# ---- synthetic studies -------------------------------------------------------------------------------
def _blob_case(seed: int, shape=(56, 56, 40), spacing=(2.0, 2.0, 2.0)):
    """A small CT-like volume: air, a soft-tissue body, a bright pancreas ellipsoid with a dark tumour (not every case)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = np.asarray(shape) / 2.0
    image = np.full(shape, -900.0, np.float32)
    label = np.zeros(shape, np.uint8)
    image[(((grid - centre) / (np.asarray(shape) * 0.45)) ** 2).sum(-1) < 1] = 40.0
    pc = centre + rng.uniform(-5, 5, 3)
    pancreas = (((grid - pc) / (np.array([10.0, 5.0, 5.0]) * rng.uniform(0.8, 1.2))) ** 2).sum(-1) < 1
    image[pancreas], label[pancreas] = 110.0, 1
    if seed % 3 != 2:
        tumour = ((((grid - (pc + rng.uniform(-3, 3, 3))) / 3.0) ** 2).sum(-1) < 1) & pancreas
        image[tumour], label[tumour] = 10.0, 2
    image += rng.normal(0, 10, shape)
    return image.astype(np.int16), label, np.diag(list(spacing) + [1.0])


def make_studies(root: Path, count: int = 6, labelled: int = 4, seed: int = 0) -> Path:
    """A MONAI Label studies folder of ``count`` small volumes, the first ``labelled`` with ``labels/final``."""
    import nibabel as nib

    root = Path(root)
    (root / "labels" / "final").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, label, affine = _blob_case(seed + i)
        nib.save(nib.Nifti1Image(image, affine), str(root / f"case_{i:03d}.nii.gz"))
        if i < labelled:
            nib.save(nib.Nifti1Image(label, affine), str(root / "labels" / "final" / f"case_{i:03d}.nii.gz"))
    return root


def blob_label(index: int) -> tuple[np.ndarray, np.ndarray]:
    _, label, affine = _blob_case(index)
    return label, affine


def local_datastore(studies: Path):
    """A plain MONAI Label datastore on ``studies`` (NIfTI images, no reloading)."""
    from monailabel.datastore.local import LocalDatastore

    return LocalDatastore(str(studies), extensions=("*.nii.gz",), auto_reload=False)


def segmentation_tasks(model_dir: Path):
    """The app's segmentation config for ``model_dir`` (CPU profile), its search trainer and its trainer."""
    from lib.configs.segmentation import SegmentationConfig

    cfg = SegmentationConfig()
    cfg.init("dints_pancreas", str(model_dir), {"profile": "cpu"}, None)
    return cfg, cfg.search_trainer(), cfg.trainer()
