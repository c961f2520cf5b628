"""Run the served inference pipeline outside the server and score it: for tests, reports and benchmarks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from lib.metrics import dice_per_class

HELD_OUT_SEED_BASE = 9500  # never used for training (5000+), validation (9000+) or the sample datastore (1000+)


def make_infer_task(model_dir: str | os.PathLike, conf: dict[str, str] | None = None):
    """The ``dints_pancreas`` task exactly as the app builds it."""
    from lib.configs.dints_pancreas import DiNTSPancreasConfig

    cfg = DiNTSPancreasConfig()
    cfg.init("dints_pancreas", str(model_dir), dict(conf or {}), None)
    return cfg.infer()["dints_pancreas"]


def segment_file(task, image_path: str | os.PathLike, **params) -> tuple[np.ndarray, dict]:
    """Label array on the input grid (uint8) and the result JSON, without writing a file."""
    request = {"image": str(image_path), "result_write_to_file": False, "device": "cpu", **params}
    label, result = task(request)
    return np.asarray(label), result


def evaluate_phantoms(task, seeds: Iterable[int], preset: str = "sample", workdir: str | None = None) -> list[dict]:
    """Per-phantom Dice of the task's label against the phantom's ground truth, in the input geometry."""
    from lib.data.phantom import make_phantom, save_phantom

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for seed in seeds:
            ph = make_phantom(seed, preset=preset)
            path = Path(tmp) / f"phantom_{seed}.nii.gz"
            save_phantom(ph, path)
            label, _ = segment_file(task, path)
            rows.append({"seed": seed, "has_tumour": bool(ph.info.get("has_tumour")), **dice_per_class(label, ph.label)})
    return rows
