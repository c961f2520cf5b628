"""Run the served inference pipeline outside the server and score it: for tests, reports and benchmarks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from lib.metrics import dice_per_class


def make_infer_task(model_dir: str | os.PathLike, conf: dict[str, str] | None = None):
    """The infer task exactly as the app builds it (``dints_pancreas`` unless ``conf`` names a task/network)."""
    from lib.configs.segmentation import SegmentationConfig, model_name

    conf = dict(conf or {})
    cfg = SegmentationConfig()
    cfg.init(model_name(conf), str(model_dir), conf, None)
    return cfg.infer()[model_name(conf)]


def segment_file(task, image_path: str | os.PathLike, **params) -> tuple[np.ndarray, dict]:
    """Label array on the input grid (uint8) and the result JSON, without writing a file."""
    request = {"image": str(image_path), "result_write_to_file": False, "device": "cpu", **params}
    label, result = task(request)
    return np.asarray(label), result


def evaluate_phantoms(task, seeds: Iterable[int], preset: str = "sample", workdir: str | None = None) -> list[dict]:
    """Per-phantom Dice of the infer task's label against the phantom's ground truth (the task's label), in the
    input geometry."""
    from lib.data.phantom import make_phantom, save_phantom, task_label

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for seed in seeds:
            ph = make_phantom(seed, preset=preset)
            path = Path(tmp) / f"phantom_{seed}.nii.gz"
            save_phantom(ph, path)
            label, _ = segment_file(task, path)
            truth = task_label(ph, task.task.name)
            rows.append({"seed": seed, "has_tumour": bool(ph.info.get("has_tumour")),
                         **dice_per_class(label, truth, task.task.class_names)})
    return rows
