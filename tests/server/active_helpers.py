"""Small fixtures for the active-learning tests: tiny CT-like volumes and a tiny random DiNTS checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lib.networks.compact_arch import compact_cpu_arch
from lib.networks.factory import build_dints, file_checksum, save_checkpoint

CHANNEL_MUL = 0.125


def tiny_ct(seed: int, shape=(40, 40, 24), spacing=(3.0, 3.0, 4.0)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse of soft tissue in air with a few brighter/darker blobs (HU), plus a label (blob = pancreas)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 <= 1.0
    img = np.full(shape, -1000.0, np.float32)
    img[body] = 30.0 + rng.normal(0, 15, size=int(body.sum()))
    label = np.zeros(shape, np.uint8)
    for k in range(3):
        c = rng.uniform(-0.4, 0.4, size=3)
        r = rng.uniform(0.12, 0.3)
        blob = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= r * r
        img[blob & body] = rng.uniform(-120, 160)
        if k == 0:
            label[blob & body] = 1
    return img.astype(np.int16), label


def affine_for(spacing) -> np.ndarray:
    return np.diag([float(s) for s in spacing] + [1.0])


def write_studies(root: Path, n_images: int = 6, n_labelled: int = 1, seed: int = 0) -> list[str]:
    """A MONAI Label studies folder of ``n_images`` tiny CTs, the first ``n_labelled`` with a final label."""
    (root / "labels" / "final").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n_images):
        img, lab = tiny_ct(seed + i)
        image_id = f"case_{i:03d}"
        nib.save(nib.Nifti1Image(img, affine_for((3.0, 3.0, 4.0))), str(root / f"{image_id}.nii.gz"))
        if i < n_labelled:
            nib.save(nib.Nifti1Image(lab, affine_for((3.0, 3.0, 4.0))), str(root / "labels" / "final" / f"{image_id}.nii.gz"))
        ids.append(image_id)
    return ids


def write_label(path: Path, image_id: str, seed: int) -> Path:
    _, lab = tiny_ct(seed)
    nib.save(nib.Nifti1Image(lab, affine_for((3.0, 3.0, 4.0))), str(path))
    return path


def publish_random_model(path: Path, seed: int) -> str:
    """A random tiny DiNTS (compact cpu architecture, channel_mul 0.125) published atomically; its checksum."""
    torch.manual_seed(seed)
    arch = compact_cpu_arch()
    net = build_dints(arch, CHANNEL_MUL, 3)
    save_checkpoint(net, arch, path, meta={"channel_mul": CHANNEL_MUL, "profile": "cpu", "note": f"random seed {seed}"})
    return file_checksum(path)


def stored_scores(studies: Path) -> dict[str, dict]:
    """``dints_uncertainty`` entries of every image, read from the datastore file on disk."""
    path = studies / "datastore_v2.json"
    if not path.exists():
        return {}
    for _ in range(5):
        try:
            data = json.loads(path.read_text())
            break
        except json.JSONDecodeError:  # being rewritten right now
            time.sleep(0.2)
    else:
        return {}
    out = {}
    for image_id, obj in data.get("objects", {}).items():
        info = obj.get("image", {}).get("info", {})
        labelled = bool(obj.get("labels", {}).get("final"))
        out[image_id] = {"labelled": labelled, **(info.get("dints_uncertainty") or {})}
    return out
