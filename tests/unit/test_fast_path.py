"""CPU fast path (issue 4): the coarse-to-fine label agrees with the full sliding window, and the cropped
restore is the full restore restricted to the region."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lib import metrics
from lib.runtime.fast_path import FastPathOptions, fast_pass, full_pass
from lib.transforms.restore import resample_argmax, restore_label

ROI = (32, 32, 32)


def dice(a, b) -> float:
    """Foreground Dice (lib.metrics), 0 when both are empty: an empty answer never passes as agreement here."""
    return metrics.dice(np.asarray(a) > 0, np.asarray(b) > 0, True, empty=0.0)


class BlobDetector(nn.Module):
    """A stand-in segmentation network with local context (5^3 smoothing): organ-like intensity -> class 1,
    brighter -> class 2. Enough to exercise localisation, cropping, blending and restore."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool3d(5, stride=1, padding=2, count_include_pad=False)

    def forward(self, x):
        s = self.pool(x)
        organ = 1.0 - 12.0 * (s - 0.5).abs()
        bright = 1.0 - 12.0 * (s - 0.8).abs()
        return torch.cat([torch.full_like(s, 0.2), organ, bright], 1)


def synthetic_grid(shape=(110, 90, 100), seed=0) -> torch.Tensor:
    """A scaled (0..1) model-grid image: body ellipse of fat-like 0.02, an organ at 0.5, a lesion at 0.8."""
    rng = np.random.RandomState(seed)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    img = np.zeros(shape, np.float32)
    body = ((x - 55) / 50.0) ** 2 + ((y - 45) / 38.0) ** 2 < 1
    img[np.broadcast_to(body, shape)] = 0.02
    organ = ((x - 70) / 14.0) ** 2 + ((y - 40) / 7.0) ** 2 + ((z - 60) / 9.0) ** 2 < 1
    img[organ] = 0.5
    lesion = ((x - 74) / 4.0) ** 2 + ((y - 40) / 4.0) ** 2 + ((z - 60) / 4.0) ** 2 < 1
    img[lesion] = 0.8
    img += rng.normal(0, 0.02, shape).astype(np.float32)
    return torch.from_numpy(np.clip(img, 0, 1))[None]


def test_fast_restore_matches_full_restore():
    rng = np.random.RandomState(0)
    full = torch.zeros(3, 30, 26, 22)
    full[0] = 1.0
    lo, hi = np.array([6, 4, 5]), np.array([24, 20, 18])
    inner = torch.from_numpy(rng.rand(3, *(hi - lo - 4)).astype(np.float32))
    full[:, lo[0] + 2 : hi[0] - 2, lo[1] + 2 : hi[1] - 2, lo[2] + 2 : hi[2] - 2] = inner * 2
    model_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    model_affine[:3, 3] = [-30, -20, 10]
    # an oblique, anisotropic, LPS-like input grid
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    input_affine = np.eye(4)
    input_affine[:3, :3] = rot @ np.diag([-0.8, -0.9, 3.0])
    input_affine[:3, 3] = [10, 25, 12]
    shape = (70, 60, 16)
    ref = resample_argmax(full, model_affine, input_affine, shape)
    crop = full[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].clone()
    out = restore_label(crop, tuple(lo), model_affine, input_affine, shape)
    assert out.dtype == np.uint8 and out.shape == shape
    assert (ref > 0).sum() > 50
    np.testing.assert_array_equal(out, ref)


def _label_on_grid(result, shape) -> np.ndarray:
    """Label of a fast/full result placed on the whole model grid (background outside its box)."""
    out = np.zeros(shape, np.int64)
    o, s = result.offset, result.scores.shape[1:]
    out[o[0] : o[0] + s[0], o[1] : o[1] + s[1], o[2] : o[2] + s[2]] = result.scores.argmax(0).numpy()
    return out


def test_fast_path_agrees_with_full_sliding_window():
    image = synthetic_grid()
    net = BlobDetector().eval()
    full = full_pass(image, net, ROI, 2, 0.25)
    fast = fast_pass(image, net, ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0), opts=FastPathOptions(margin_mm=16))
    assert fast.stats["mode"] == "fast" and fast.stats["fine_windows"] > 0
    # the fine pass runs only the full grid's windows that touch the found region
    assert fast.stats["full_windows"] == full.stats["windows"] > fast.stats["fine_windows"]
    full_label = full.scores.argmax(0).numpy()
    fast_label = _label_on_grid(fast, full_label.shape)
    assert (full_label > 0).sum() > 1000
    assert dice(fast_label, full_label) >= 0.98
    for c in (1, 2):
        assert dice(fast_label == c, full_label == c) >= 0.98


def test_one_window_coarse_pass_only_for_any_shape_backends_and_same_label():
    image = synthetic_grid()
    net = BlobDetector().eval()
    opts = FastPathOptions(margin_mm=16, coarse_window_voxels=2_000_000)
    tiled = fast_pass(image, net, ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0), opts=FastPathOptions(margin_mm=16))
    traced = fast_pass(image, net, ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0), opts=opts, any_shape=False)
    one = fast_pass(image, net, ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0), opts=opts, any_shape=True)
    assert traced.stats["coarse_windows"] == tiled.stats["coarse_windows"] > 1  # a traced engine keeps its window
    assert one.stats["coarse_windows"] == 1
    small = FastPathOptions(margin_mm=16, coarse_window_voxels=1000)  # body box over the budget: tiles again
    assert fast_pass(image, net, ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0), opts=small, any_shape=True).stats[
        "coarse_windows"] == tiled.stats["coarse_windows"]
    shape = image.shape[1:]
    assert dice(_label_on_grid(one, shape), _label_on_grid(tiled, shape)) >= 0.98


def test_fast_path_nothing_found_is_background():
    image = torch.zeros(1, 60, 60, 60)
    image[:, 10:50, 10:50, 10:50] = 0.02  # body, no organ
    fast = fast_pass(image, BlobDetector().eval(), ROI, 2, 0.25, spacing=(2.0, 2.0, 2.0))
    assert fast.stats["fine_windows"] == 0 and int((fast.scores.argmax(0) > 0).sum()) == 0


# ---- with the shipped weights, on generated phantoms -------------------------------------------------------
def _shipped_task(fast: bool):
    from lib.evaluation import make_infer_task
    from support.repo import MODEL_DIR, shipped

    shipped(MODEL_DIR / "pretrained_dints_pancreas_cpu.pt", "scripts/train_cpu_weights.py writes them")
    return make_infer_task(MODEL_DIR, {"profile": "cpu", "backend": "torch", "fast_path": str(fast).lower(),
                                       "use_pretrained_only": "true", "background_compile": "false"})


@pytest.mark.parametrize("seed", [4242, pytest.param(4243, marks=pytest.mark.slow)])  # the second phantom: -m slow
def test_fast_path_agrees_with_full_window_on_phantoms(seed, tmp_path):
    from lib.data import phantom
    ph = phantom.make_phantom(seed, preset="sample")
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    phantom.save_phantom(ph, str(image), str(label))
    full_task = _shipped_task(fast=False)
    full, _ = full_task({"image": str(image), "result_write_to_file": False})
    full = np.asarray(full)
    truth = np.asarray(ph.label)
    # the comparison only means something where the full window finds the pancreas (tests/unit/test_shipped_weights.py)
    assert dice(full == 1, truth == 1) >= 0.3, "the shipped weights do not segment this phantom"
    fast, result = _shipped_task(fast=True)({"image": str(image), "result_write_to_file": False})
    fast = np.asarray(fast)
    assert result["inference"]["mode"] == "fast"
    assert fast.shape == full.shape
    assert dice(fast, full) >= 0.98, (dice(fast, full), result["inference"])
    if (full == 1).sum() > 100:
        assert dice(fast == 1, full == 1) >= 0.98


def test_a_request_is_checked_once_and_before_any_image_work(monkeypatch):
    """The app checks a request before it waits for the inference slot (``checked``) and the task does not check
    it again; an unchecked request (in-process callers) is checked by the task, before the pipeline runs."""
    from monailabel.tasks.infer.basic_infer import BasicInferTask

    from lib.errors import InputError
    from lib.infers.served_task import CHECKED_KEY, RequestChecked

    task, other = _shipped_task(fast=True), _shipped_task(fast=True)
    calls, pipeline = [], []
    real = task.check_request
    monkeypatch.setattr(task, "check_request", lambda request: calls.append(dict(request)) or real(request))
    monkeypatch.setattr(BasicInferTask, "__call__", lambda self, request, callbacks=None: pipeline.append(1) or ("label", {}))
    request = task.checked({"image": "x.nii.gz", "sw_overlap": 0.5})
    assert task(request) == ("label", {}) and len(calls) == 1
    assert task({"image": "x.nii.gz"}) == ("label", {}) and len(calls) == 2  # not marked: the task checks it
    with pytest.raises(InputError, match="sw_overlap"):
        task.checked({"image": "x.nii.gz", "sw_overlap": 2})
    for mark in (str(id(task)), {"task": id(task)}, RequestChecked(id(other))):  # JSON cannot forge it, nor another task
        with pytest.raises(InputError, match="fast_path"):
            task({"image": "x.nii.gz", "fast_path": "flase", CHECKED_KEY: mark})
    assert len(pipeline) == 2, "a bad request reached the pipeline"
