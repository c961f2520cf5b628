"""Helpers of the data-safety tests: folder hashes, labels made from an image's own header, hostile inputs."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from lib.atomic import sha256_file

HOSTILE_IDS = ["..", "../model/x", "a/b", "a\\b", "/etc/passwd", ".hidden", "x" * 300, "a\x00b", "a\nb",
               "%2e%2e", "phantom_009/../../model", "-rf", " "]


def tree_hash(*folders: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under the folders (lock files excluded)."""
    out = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                if name == ".lock":
                    continue
                path = Path(root) / name
                out[str(path.relative_to(folder.parent))] = sha256_file(path)
    return out


def image_of(studies: Path, image_id: str) -> nib.Nifti1Image:
    return nib.load(str(studies / f"{image_id}.nii.gz"))


def label_for(studies: Path, image_id: str, path: Path, values=(0, 1, 2), dtype=np.uint8, shape=None, affine=None,
              seed: int = 0) -> Path:
    """A label on the image's grid (or a deliberately wrong one) with blobs of the given values."""
    img = image_of(studies, image_id)
    shape = tuple(shape or img.shape)
    data = np.zeros(shape, dtype=dtype)
    rng = np.random.default_rng(seed)
    for v in values:
        if v == 0:
            continue
        c = [int(rng.integers(s // 4, 3 * s // 4 + 1)) for s in shape]
        sl = tuple(slice(max(0, ci - 3), ci + 3) for ci in c)
        data[sl] = v
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))
    return path


def sha(path) -> str:
    return sha256_file(path)
