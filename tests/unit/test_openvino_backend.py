"""The ``openvino`` CPU backend (``--conf backend openvino``): the converted model gives fp32's labels, is converted
once and then read from the engine cache under a key that changes with the weights and the libraries; bf16 only
after the gate (a failed gate stays on OpenVINO's f32, saying why); without the package the request runs on
``torch`` and says why. A minimal DiNTS and 32^3 windows keep it to seconds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from support.tiny_models import ROI, infer, tiny_task

from lib.networks.factory import NetworkSpec, file_checksum
from lib.runtime import backends as B
from lib.runtime import openvino_backend as O
from lib.runtime import reduced_precision as R

needs_openvino = pytest.mark.skipif(not O.openvino_installed(), reason="the openvino package is not installed")


@pytest.fixture(scope="module")
def torch_label(files):
    weights, image = files
    label, result = infer(tiny_task(weights, backend="torch"), image, fast_path=False)
    assert result["inference"]["backend"] == "torch" and len(np.unique(label)) > 1
    return label


def load(weights):
    return NetworkSpec("dints", 3, 0.125, None).load(weights)[0]


@needs_openvino
@pytest.mark.parametrize("native_bf16", [True, False])
def test_openvino_labels_are_fp32s_and_the_model_is_converted_once(files, torch_label, calibration, tmp_path,
                                                                   monkeypatch, native_bf16):
    weights, image = files
    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: ["amx_bf16"] if native_bf16 else [])
    if native_bf16 and not R.cpu_bf16_flags():
        pytest.skip("this CPU has no native bf16")
    timed = []
    # bf16 measured as the faster here (on a network this tiny it may not be): the gate decides
    monkeypatch.setattr(O, "time_precisions", lambda *a, **k: timed.append(1) or {"f32": 2.0, "bf16": 1.0})
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path), calibration=calibration)
    label, result = infer(tiny_task(weights, backend_options=opts, backend="openvino"), image, fast_path=False)
    info = result["inference"]
    assert info["backend"] == "openvino" and info["precision"] == ("bf16" if native_bf16 else "fp32")
    assert np.mean(label == torch_label) > 0.99 and len(timed) == (1 if native_bf16 else 0)
    files_now = sorted(os.listdir(tmp_path))
    verdicts = ["gate", "speed"] if native_bf16 else []
    assert sorted(f.split(".")[-2].split("-")[0] if f.endswith(".json") else f.rsplit(".", 1)[-1] for f in files_now) \
        == sorted(["bin", "xml", *verdicts])
    # a restarted server reads the converted model and the verdicts instead of converting and measuring again
    monkeypatch.setattr(O, "_convert", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setattr(R, "run_gate", lambda *a, **k: pytest.fail("the gate ran again"))
    monkeypatch.setattr(O, "time_precisions", lambda *a, **k: pytest.fail("timed again"))
    again = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    assert again.backend == "openvino" and sorted(os.listdir(tmp_path)) == files_now


@needs_openvino
def test_where_bf16_is_slower_openvino_serves_fp32_without_a_gate_and_says_why(files, calibration, tmp_path,
                                                                                monkeypatch):
    """Native bf16 is not always faster (OpenVINO's bf16 was slower than its f32 with oneDNN limited to AVX-512 BF16):
    the measured faster precision is served, the gate is not run for a precision not served, and the note gives the
    two timings."""
    weights, _ = files
    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(O, "time_precisions", lambda *a, **k: {"f32": 344.0, "bf16": 424.0})
    monkeypatch.setattr(R, "run_gate", lambda *a, **k: pytest.fail("gated a precision it does not serve"))
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path), calibration=calibration)
    prepared = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "openvino" and prepared.precision == "fp32"
    assert prepared.describe()["note"] == "OpenVINO fp32: faster than bf16 on this CPU (344 vs 424 ms a batch)"


@needs_openvino
def test_the_speed_of_both_precisions_is_measured_on_this_cpu(files):
    """The timing itself, on the real converted model: both precisions run (a bf16 compile on a CPU without it is
    emulated, still a number) and each takes time."""
    timings = O.time_precisions(O.convert(load(files[0]), ROI, 2), (2, 1, *ROI), rounds=1)
    assert set(timings) == {"f32", "bf16"} and all(t > 0 for t in timings.values())


def test_the_speed_verdict_is_per_cpu_isa_cap_and_thread_count(monkeypatch):
    import torch

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    base = O.speed_path("/cache/w.openvino.ir.abc.xml")
    assert base.startswith("/cache/w.openvino.ir.abc.speed-") and base.endswith(".json")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # a run standing in for a CPU without AMX
    assert O.speed_path("/cache/w.openvino.ir.abc.xml") != base
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert O.speed_path("/cache/w.openvino.ir.abc.xml") != base
    finally:
        torch.set_num_threads(threads)
    assert O.speed_path("/cache/w.openvino.ir.abc.xml") == base


@needs_openvino
def test_a_failed_gate_stays_on_openvinos_fp32_and_says_why(files, calibration, tmp_path, monkeypatch):
    weights, _ = files
    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: ["amx_bf16"])
    monkeypatch.setattr(O, "time_precisions", lambda *a, **k: {"f32": 2.0, "bf16": 1.0})
    monkeypatch.setattr(R, "GATE_DICE", 1.01)  # nothing can pass
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path), calibration=calibration)
    prepared = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "openvino" and prepared.precision == "fp32"
    assert "bf16 not used" in prepared.describe()["note"] and "phantom_00" in prepared.describe()["note"]


@needs_openvino
def test_a_damaged_cached_model_is_converted_again(files, tmp_path, monkeypatch):
    weights, _ = files
    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: [])
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path))
    first = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    with open(first.engine_file, "w") as fh:
        fh.write("<net>truncated")
    again = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    assert again.backend == "openvino" and open(again.engine_file).read().startswith("<?xml")


def test_the_converted_models_key_changes_with_weights_libraries_window_and_inputs(monkeypatch):
    if not O.openvino_installed():
        monkeypatch.setattr(O, "_versions", lambda: {"torch": "2.13.0", "openvino": "2026.4"})
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir="/cache")
    base = O.model_path("/m/w.pt", "aaa", opts, 1)
    assert base.startswith("/cache/w.openvino.ir.") and base.endswith(".xml")
    assert O.model_path("/m/w.pt", "bbb", opts, 1) != base
    assert O.model_path("/m/w.pt", "aaa", opts, 4) != base  # an interactive model's guidance channels
    assert O.model_path("/m/w.pt", "aaa", B.BackendOptions(roi_size=(64, 64, 64), sw_batch_size=2, engine_dir="/cache"), 1) != base
    assert O.model_path("/m/w.pt", "aaa", B.BackendOptions(roi_size=ROI, sw_batch_size=4, engine_dir="/cache"), 1) != base
    versions = O._versions()
    monkeypatch.setattr(O, "_versions", lambda: {**versions, "openvino": "0.0"})
    assert O.model_path("/m/w.pt", "aaa", opts, 1) != base


def test_without_the_package_the_request_runs_on_torch_and_says_why(files, tmp_path, monkeypatch):
    weights, _ = files
    monkeypatch.setattr(O, "openvino_installed", lambda: False)
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path))
    prepared = B.prepare(load(weights), "openvino", "cpu", opts, weights, file_checksum(weights))
    assert prepared.backend == "torch" and "openvino package is not installed" in prepared.fallback_reason
    assert os.listdir(tmp_path) == []  # nothing half-written in the engine cache


@needs_openvino
def test_an_unwritable_engine_dir_still_serves_openvino(files, torch_label, tmp_path, monkeypatch):
    """engine_dir under a plain file cannot be created: the converted model is served uncached, and says nothing of a
    file it has not written."""
    weights, image = files
    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: [])
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(blocker / "engines"))
    label, result = infer(tiny_task(weights, backend_options=opts, backend="openvino"), image, fast_path=False)
    assert result["inference"]["backend"] == "openvino" and "engine_file" not in result["inference"]
    assert np.mean(label == torch_label) > 0.99


@needs_openvino
def test_cpu_auto_converts_in_the_background_then_serves_openvino(files, torch_label, tmp_path, monkeypatch):
    """CPU ``auto`` with ``background_compile``: the first request runs on PyTorch while a low-priority process
    converts the network and runs it once on this CPU; the next request runs on OpenVINO, with PyTorch's label, and
    no compiled package is built beside it."""
    import shutil

    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: [])  # f32: no calibration gate in the way
    weights = shutil.copy(files[0], tmp_path / "w.pt")
    task = tiny_task(weights, background_compile=True)
    label, result = infer(task, files[1], fast_path=False)
    info = result["inference"]
    assert info["backend"] == "torch" and info["requested"] == "auto"
    assert info["note"] == "OpenVINO model converting in the background", info
    np.testing.assert_array_equal(label, torch_label)
    converted = task.served.cpu_openvino("cpu", "auto")
    assert converted.startswith(str(tmp_path / "engines")) and converted.endswith(".xml")
    assert task.served._builds.wait(converted, timeout=600), open(f"{converted}.log").read()

    label, result = infer(task, files[1], fast_path=False)
    info = result["inference"]
    assert info["backend"] == "openvino" and info["requested"] == "auto" and "note" not in info, info
    assert info["engine_file"] == os.path.basename(converted)
    assert np.mean(label == torch_label) > 0.99
    assert not [f for f in os.listdir(tmp_path / "engines") if f.endswith(".pt2")]


@needs_openvino
@pytest.mark.skipif(not R.cpu_bf16_flags(), reason="this CPU has no native bf16")
def test_the_background_conversion_times_bf16_against_f32_once_for_the_server(files, calibration, tmp_path,
                                                                              monkeypatch):
    """With native bf16 the background process also times the two precisions; the server reads that verdict and
    serves the faster one (bf16 only through its gate), without timing anything itself."""
    import shutil

    monkeypatch.setattr(O, "time_precisions", lambda *a, **k: pytest.fail("the server timed the precisions itself"))
    weights = shutil.copy(files[0], tmp_path / "w.pt")
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, calibration=calibration)
    task = tiny_task(weights, backend_options=opts, background_compile=True)
    infer(task, files[1], fast_path=False)
    converted = task.served.cpu_openvino("cpu", "auto")
    assert task.served._builds.wait(converted, timeout=600), open(f"{converted}.log").read()
    verdict = O.speed_path(converted)
    timings = json.loads(open(verdict).read())["ms_per_batch"]
    assert set(timings) == {"f32", "bf16"} and all(t > 0 for t in timings.values())
    _, result = infer(task, files[1], fast_path=False)
    info = result["inference"]
    assert info["backend"] == "openvino", info
    if timings["bf16"] >= timings["f32"]:
        assert info["precision"] == "fp32" and "faster than bf16 on this CPU" in info["note"], info
    else:
        assert "faster than bf16" not in info.get("note", "") and "bf16" in info["note"], info  # the gate's word


@needs_openvino
def test_a_failed_conversion_leaves_auto_on_pytorch_and_says_why(files, torch_label, tmp_path, monkeypatch):
    """The background process cannot write the converted model (a folder is in the way of its .bin): the request
    runs on PyTorch, its note says what failed, and the conversion is not tried again on every request."""
    import shutil

    from lib.runtime.served_model import ServedModel

    monkeypatch.setattr(O, "cpu_bf16_flags", lambda: [])
    monkeypatch.setattr(ServedModel, "cpu_package", lambda *a: None)  # no compiled package build as the next resort
    weights = shutil.copy(files[0], tmp_path / "w.pt")
    task = tiny_task(weights, background_compile=True)
    converted = task.served.cpu_openvino("cpu", "auto")
    os.makedirs(converted[:-4] + ".bin")
    infer(task, files[1], fast_path=False)
    assert not task.served._builds.wait(converted, timeout=600)
    for _ in range(2):
        label, result = infer(task, files[1], fast_path=False)
        info = result["inference"]
        assert info["backend"] == "torch" and "openvino: error: OSError: cannot write" in info["note"], info
        np.testing.assert_array_equal(label, torch_label)
    assert list(task.served._builds.failed) == [converted] and not os.path.exists(converted)


@needs_openvino
def test_a_conversion_sends_no_usage_statistics(files, tmp_path, monkeypatch):
    """OpenVINO's converter would report usage to Google Analytics (and write a client id under ~/intel) unless the
    user opted out: converting here must write nothing to the home folder and open no connection."""
    import socket

    weights, _ = files
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)  # the converter's own exception for CI machines must not be what saves us
    opened = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")):
            opened.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    O.convert(load(weights), ROI, 2)
    assert not (tmp_path / "intel").exists() and opened == []
