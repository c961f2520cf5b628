"""bf16 on the CPU (``--conf backend bf16``): served only after its labels agree with fp32's on calibration images,
the verdict cached under a key that changes with the weights, the libraries and the CPU; any failure falls back to
fp32 eager with the reason. A minimal DiNTS and 32^3 windows keep it to seconds."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from support.tiny_models import ROI, infer, tiny_task

from lib.networks.factory import NetworkSpec, file_checksum
from lib.runtime import backends as B
from lib.runtime import reduced_precision as R

needs_bf16 = pytest.mark.skipif(not R.cpu_bf16_flags(), reason="this CPU has no native bf16 (amx_bf16 / avx512_bf16)")


def test_calibration_windows_are_the_inference_preprocessing_of_sample_images(calibration):
    windows = calibration.windows(in_channels=4)
    assert [name for name, _ in windows] == ["phantom_000.nii.gz", "phantom_001.nii.gz", "phantom_002.nii.gz"]
    for _, w in windows:
        assert w.shape == (1, 4, *ROI) and float(w[:, 0].min()) >= 0.0 and float(w[:, 0].max()) <= 1.0
        assert float(w[:, 0].std()) > 0.05 and not w[:, 1:].any()  # anatomy in the CT channel, no guidance


def test_label_agreement_is_foreground_dice():
    a = torch.zeros(1, 3, 4, 4, 4)
    a[:, 1, :2] = 1.0  # half the voxels class 1, the rest background
    b = a.clone()
    assert R.label_agreement(a, b) == 1.0
    b[:, 1, :1] = 0.0  # class 1 halved
    assert R.label_agreement(a, b) == pytest.approx(2 * 16 / (32 + 16))
    assert R.label_agreement(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2)) == 1.0


@needs_bf16
def test_bf16_is_served_after_the_gate_and_the_verdict_is_cached(files, calibration, tmp_path, monkeypatch):
    weights, image = files
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path), calibration=calibration)
    net, _ = NetworkSpec("dints", 3, 0.125, None).load(weights)
    prepared = B.prepare(net, "bf16", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "bf16" and prepared.precision == "bf16" and "agreement" in prepared.describe()["note"]
    (verdict,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    # a second server start reads the verdict instead of measuring again
    monkeypatch.setattr(R, "run_gate", lambda *a, **k: pytest.fail("the gate ran again"))
    again = B.prepare(net, "bf16", "cpu", opts, weights, file_checksum(weights))
    assert again.backend == "bf16" and os.listdir(tmp_path) == [verdict]
    # through the infer task: the label of bf16 is fp32's on the test CT
    label_bf16, result = infer(tiny_task(weights, backend_options=opts, backend="bf16"), image, fast_path=False)
    label_fp32, _ = infer(tiny_task(weights, backend="torch"), image, fast_path=False)
    assert result["inference"]["backend"] == "bf16"
    assert np.mean(label_bf16 == label_fp32) > 0.99


@needs_bf16
def test_a_failed_gate_falls_back_to_fp32_and_says_why(files, calibration, tmp_path, monkeypatch):
    weights, _ = files
    monkeypatch.setattr(R, "GATE_DICE", 1.01)  # nothing can pass
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path), calibration=calibration)
    net, _ = NetworkSpec("dints", 3, 0.125, None).load(weights)
    prepared = B.prepare(net, "bf16", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "torch" and prepared.precision == "fp32"
    assert "bf16: its labels agree with fp32's at Dice" in prepared.fallback_reason and "phantom_00" in prepared.fallback_reason


def test_without_native_bf16_or_calibration_it_stays_fp32(files, calibration, tmp_path, monkeypatch):
    weights, _ = files
    net, _ = NetworkSpec("dints", 3, 0.125, None).load(weights)
    monkeypatch.setattr(R, "cpu_bf16_flags", lambda: [])
    opts = B.BackendOptions(roi_size=ROI, engine_dir=str(tmp_path), calibration=calibration)
    prepared = B.prepare(net, "bf16", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "torch" and "no native bf16" in prepared.fallback_reason
    monkeypatch.setattr(R, "cpu_bf16_flags", lambda: ["amx_bf16"])
    prepared = B.prepare(net, "bf16", "cpu", B.BackendOptions(roi_size=ROI, engine_dir=str(tmp_path)), weights, "x")
    assert prepared.backend == "torch" and "no calibration images" in prepared.fallback_reason


def test_the_verdict_key_changes_with_weights_libraries_cpu_and_calibration(calibration, monkeypatch):
    opts = B.BackendOptions(roi_size=ROI, engine_dir="/cache")
    base = R.gate_path("/m/w.pt", "aaa", opts, calibration.identity())
    assert R.gate_path("/m/w.pt", "bbb", opts, calibration.identity()) != base
    assert R.gate_path("/m/w.pt", "aaa", opts, "other images") != base
    monkeypatch.setattr(R, "cpu_bf16_flags", lambda: ["another_cpu"])
    cpu = R.gate_path("/m/w.pt", "aaa", opts, calibration.identity())
    monkeypatch.setattr(R, "library_versions", lambda: {"torch": "0.0"})
    assert len({base, cpu, R.gate_path("/m/w.pt", "aaa", opts, calibration.identity())}) == 3
    monkeypatch.setattr(R, "LAYOUT_VERSION", R.LAYOUT_VERSION + 1)  # a change to what the bf16 model computes
    assert R.gate_path("/m/w.pt", "aaa", opts, calibration.identity()) not in {base, cpu}


@needs_bf16
def test_auto_on_a_bf16_cpu_runs_bf16_once_the_gate_passes_else_fp32_saying_why(files, calibration, tmp_path, monkeypatch):
    from lib.runtime.served_model import ServedModel

    weights, _ = files
    spec = NetworkSpec("dints", 3, 0.125, None)
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path / "a"), calibration=calibration)
    served = ServedModel([weights], spec, opts, background_compile=False)
    warm = served.warm_up("cpu", "auto")  # the gate runs at start-up
    assert warm.backend == "bf16" and served.prepared("cpu", "auto").requested == "auto"
    fp32 = ServedModel([weights], spec, B.BackendOptions(roi_size=ROI, engine_dir=str(tmp_path / "b"), calibration=calibration,
                                                         cpu_precision="fp32"))
    assert fp32.prepared("cpu", "auto").backend == "torch"  # --conf cpu_precision fp32
    monkeypatch.setattr(R, "GATE_DICE", 1.01)
    failed = ServedModel([weights], spec, B.BackendOptions(roi_size=ROI, engine_dir=str(tmp_path / "c"), calibration=calibration))
    prepared = failed.prepared("cpu", "auto")
    assert prepared.backend == "torch" and prepared.describe()["note"].startswith("fp32: bf16: its labels agree with fp32's at Dice")
    with pytest.raises(ValueError, match="cpu_precision must be 'auto' or 'fp32'"):
        R.cpu_precision("int4")
