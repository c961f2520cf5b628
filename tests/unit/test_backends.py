"""Inference backends (issue 4): names, fallbacks, compile/TorchScript agreement with eager, engine cache keys.

Everything runs on the CPU with a minimal DiNTS (1 block, 2 depths, channel_mul 0.125) and 32^3 windows."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lib.errors import InputError
from lib.runtime import backends as B
from lib.runtime import engine_cache as E
from lib.runtime.static_dints import StaticDiNTS
from lib.networks.compact_arch import compact_cpu_arch
from lib.networks.factory import NetworkSpec, build_dints, file_checksum
from lib.runtime.aot_package import aot_package_path
from support.tiny_models import ROI, infer, tiny_arch, tiny_checkpoint, tiny_ct, tiny_task

@pytest.fixture(scope="module")
def torch_label(files):
    weights, image = files
    label, result = infer(tiny_task(weights, backend="torch"), image, fast_path=False)
    assert result["inference"]["backend"] == "torch"
    assert len(np.unique(label)) > 1, "the test network should produce more than one class"
    return label


def test_backend_names_accepted(tmp_path):
    from lib.configs.segmentation import SegmentationConfig

    for name in B.BACKENDS:
        assert B.normalise_backend(name) == name
        assert B.normalise_backend(name.upper()) == name
        config = SegmentationConfig()
        config.init("dints_pancreas", str(tmp_path), {"profile": "cpu", "backend": name}, None)
        task = config.infer()["dints_pancreas"]
        assert task.backend == name and task.info()["backend"] == name
    assert B.normalise_backend("trt") == "tensorrt" and B.normalise_backend("jit") == "torchscript"
    with pytest.raises(ValueError, match="unknown backend"):
        B.normalise_backend("onnx")
    assert B.resolve_backend("auto", "cpu") == "torch"  # the CPU path


def test_unknown_backend_in_request_is_a_400(files):
    weights, image = files
    with pytest.raises(InputError) as err:
        infer(tiny_task(weights), image, backend="bogus")
    assert err.value.status_code == 400 if hasattr(err.value, "status_code") else True


def test_static_dints_is_identical_to_dints():
    torch.manual_seed(1)
    for arch in (tiny_arch(), compact_cpu_arch()):
        net = build_dints(arch, 0.125, 3).eval()
        x = torch.rand(2, 1, *ROI)
        with torch.no_grad():
            assert torch.equal(net(x), StaticDiNTS(net).eval()(x))


def test_tensorrt_without_cuda_falls_back_to_torch(files, torch_label, caplog):
    weights, image = files
    task = tiny_task(weights, backend="tensorrt")
    with caplog.at_level(logging.WARNING, logger="lib.runtime.backends"):
        label, result = infer(task, image, fast_path=False)
    lines = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(lines) == 1 and "tensorrt" in lines[0] and ("CUDA" in lines[0] or "torch-tensorrt" in lines[0]), lines
    assert result["inference"]["backend"] == "torch" and result["inference"]["requested"] == "tensorrt"
    assert "CUDA" in result["inference"]["fallback_reason"] or "torch-tensorrt" in result["inference"]["fallback_reason"]
    np.testing.assert_array_equal(label, torch_label)


def test_amp_on_cpu_falls_back_to_torch(files, torch_label):
    weights, image = files
    label, result = infer(tiny_task(weights, backend="amp"), image, fast_path=False)
    assert result["inference"]["backend"] == "torch" and "CUDA" in result["inference"]["fallback_reason"]
    np.testing.assert_array_equal(label, torch_label)


def test_compile_gives_the_same_label_as_torch(files, torch_label):
    weights, image = files
    task = tiny_task(weights, backend="compile")
    label, result = infer(task, image, fast_path=False)
    assert result["inference"]["backend"] == "compile", result["inference"]
    assert (label == torch_label).mean() > 0.999
    # compiled once: the second request reuses it
    prepared = task.get_model("cpu", "compile")
    assert task.get_model("cpu", "compile") is prepared
    label2, _ = infer(task, image, fast_path=False)
    np.testing.assert_array_equal(label2, label)


def test_torchscript_export_loads_and_matches_eager(files, torch_label, tmp_path):
    import shutil

    from lib.runtime.export import export_model

    weights = shutil.copy(files[0], tmp_path / "w.pt")
    path = export_model(weights, "torchscript", spec=NetworkSpec("dints", 3, 0.125), roi_size=ROI, batch_range=(1, 8), opt_batch=2, device="cpu")
    assert path.startswith(str(tmp_path / "engines")) and path.endswith(".ts")
    loaded = torch.jit.load(path)
    x = torch.rand(3, 1, *ROI)
    net = tiny_task(weights).served.network("cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-5)
    # the server finds the exported file in the engine cache instead of tracing again
    label, result = infer(tiny_task(weights, backend="torchscript"), files[1], fast_path=False)
    assert result["inference"]["backend"] == "torchscript" and result["inference"]["engine_file"] == path.split("/")[-1]
    # the traced plain network against the CPU torch backend's channels-last group norm: the same scores to rounding
    # (checked above to 1e-5), so only near-ties of this random network's argmax may differ
    assert (label == torch_label).mean() > 0.999


def test_engine_cache_key_changes_with_weights_precision_batch_and_versions(tmp_path):
    w = tiny_checkpoint(tmp_path / "model.pt", seed=0)
    versions = {"torch": "2.13.0", "torch_tensorrt": "2.13.0"}
    base = dict(backend="tensorrt", precision="fp16", batch_range=(1, 8), roi_size=(96, 96, 96), device="H100", versions=versions)
    k0 = E.engine_key(file_checksum(w), **base)
    assert E.engine_key(file_checksum(w), **base) == k0  # stable
    tiny_checkpoint(w, seed=1)  # training publishes new weights under the same name
    assert E.engine_key(file_checksum(w), **base) != k0
    for change in ({"precision": "fp32"}, {"batch_range": (1, 4)}, {"versions": {**versions, "torch_tensorrt": "2.14.0"}},
                   {"roi_size": (128, 128, 128)}, {"device": "A100"}):
        assert E.engine_key("abc", **{**base, **change}) != E.engine_key("abc", **base), change
    # the cache path follows the key, and stale engines of the same weights are pruned
    opts = B.BackendOptions(roi_size=(96, 96, 96))
    old = E.cached_engine_path(w, "aaaa", "torchscript", "fp32", opts, "cpu")
    new = E.cached_engine_path(w, "bbbb", "torchscript", "fp32", opts, "cpu")
    assert old != new and old.startswith(str(tmp_path / "engines"))
    (tmp_path / "engines").mkdir()
    open(old, "w").close()
    open(new, "w").close()
    E.prune_engines(str(tmp_path / "engines"), w, "torchscript", "fp32", keep=new)
    assert not (tmp_path / "engines" / old.split("/")[-1]).exists() and (tmp_path / "engines" / new.split("/")[-1]).exists()


def test_new_weights_rebuild_the_backend(tmp_path):
    w = tiny_checkpoint(tmp_path / "w.pt", seed=0)
    image = tiny_ct(tmp_path / "ct.nii.gz")
    task = tiny_task(w, backend="torchscript")
    infer(task, image, fast_path=False)
    first = task.get_model("cpu", "torchscript")
    import os
    import time

    time.sleep(0.01)
    tiny_checkpoint(w, seed=3)
    os.utime(w, None)
    infer(task, image, fast_path=False)
    second = task.get_model("cpu", "torchscript")
    assert second is not first and second.engine_file != first.engine_file
    assert len(list((tmp_path / "engines").glob("w.torchscript.*.ts"))) == 1  # the stale one was removed


@pytest.fixture
def without_openvino(monkeypatch):
    """CPU ``auto`` as it is without the ``openvino`` package: the compiled package is its faster form (with the
    package, tests/unit/test_openvino_backend.py)."""
    from lib.runtime import served_model

    monkeypatch.setattr(served_model, "openvino_installed", lambda: False)


def test_cpu_auto_builds_the_compiled_package_in_the_background_then_uses_it(files, torch_label, tmp_path,
                                                                             without_openvino):
    """CPU ``auto``: the first request runs eagerly while a low-priority process builds the AOTInductor package;
    once it is there, requests run on it, with the eager label; a later process loads it without a rebuild."""
    import shutil
    import time

    weights = shutil.copy(files[0], tmp_path / "w.pt")
    image = files[1]
    task = tiny_task(weights, background_compile=True)
    label, result = infer(task, image, fast_path=False)
    info = result["inference"]
    assert info["backend"] == "torch" and info["requested"] == "auto" and "background" in info["note"], info
    np.testing.assert_array_equal(label, torch_label)
    package = aot_package_path(weights, file_checksum(weights), task.backend_options)
    assert package.startswith(str(tmp_path / "engines")) and package.endswith(".pt2")
    assert task.served._builds.wait(package, timeout=600), open(f"{package}.log").read()

    label, result = infer(task, image, fast_path=False)
    info = result["inference"]
    assert info["backend"] == "aot" and info["requested"] == "auto" and info["engine_file"] == package.split("/")[-1], info
    assert "note" not in info
    assert (label == torch_label).mean() > 0.999
    # the fast path too (its coarse pass, if any, and its windows run on the package)
    label_fast, result = infer(task, image)
    assert result["inference"]["backend"] == "aot"
    assert (label_fast == torch_label).mean() > 0.999

    # another process (a restarted server) loads the file: no build, a fraction of a second
    start = time.time()
    prepared = B.prepare(tiny_task(weights).served.network("cpu"), "aot", "cpu", task.backend_options,
                         weights_path=weights, checksum=file_checksum(weights))
    assert prepared.backend == "aot" and prepared.engine_file == package and time.time() - start < 10
    with torch.no_grad():
        x = torch.rand(2, 1, *ROI)
        torch.testing.assert_close(prepared.forward(x), task.served.network("cpu")(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(prepared.forward(x[:1]), task.served.network("cpu")(x[:1]), rtol=1e-4, atol=1e-5)
        x5 = torch.rand(5, 1, *ROI)  # a request's larger sw_batch_size: chunks of the package's batch, last one padded
        torch.testing.assert_close(prepared.forward(x5), task.served.network("cpu")(x5), rtol=1e-4, atol=1e-5)


def test_failed_background_build_is_reported_once_and_stays_eager(files, tmp_path, caplog):
    from lib.runtime.aot_package import BackgroundBuilds

    builds = BackgroundBuilds()
    target = str(tmp_path / "engines" / "missing.aot.fp32.x.pt2")
    with caplog.at_level(logging.WARNING, logger="lib.runtime.aot_package"):
        assert builds.start(target, str(tmp_path / "missing.pt"), NetworkSpec("dints", 3, 0.125), ROI, 2)
        assert not builds.wait(target, timeout=300)
    assert "weights file not found" in builds.failed[target], builds.failed
    assert not builds.start(target, str(tmp_path / "missing.pt"), NetworkSpec("dints", 3, 0.125), ROI, 2)  # not retried
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(lines) == 1 and "auto stays on PyTorch" in lines[0], lines
    assert not (tmp_path / "engines" / "missing.aot.fp32.x.pt2").exists()


def test_the_export_script_writes_the_package_where_auto_looks_for_it(files, tmp_path, monkeypatch):
    """``scripts/export_model.py --format aot`` builds ahead of time so that a server never does: the file must
    land under the name the served task's ``auto`` looks for (the build itself, slow, is the next test's)."""
    import shutil

    from lib.runtime import aot_package, export
    from lib.runtime.export import export_model

    built = []
    monkeypatch.setattr(export, "check_cpu_compiler", lambda: None)
    monkeypatch.setattr(aot_package, "build_package", lambda net, path, *a, **k: built.append(path))
    weights = shutil.copy(files[0], tmp_path / "w.pt")
    path = export_model(weights, "aot", spec=NetworkSpec("dints", 3, 0.125), roi_size=ROI, opt_batch=2, device="cpu",
                        verify=False)
    served = tiny_task(weights, background_compile=True)
    assert built == [path] == [aot_package_path(weights, file_checksum(weights), served.backend_options)]
    other_batch = export_model(weights, "aot", spec=NetworkSpec("dints", 3, 0.125), roi_size=ROI, opt_batch=4,
                               device="cpu", verify=False)
    assert other_batch != path  # a package of another batch is another file, never mistaken for this one


@pytest.mark.slow
def test_exported_cpu_package_is_used_by_auto_without_a_build(files, torch_label, tmp_path, without_openvino):
    import shutil

    from lib.runtime.export import export_model

    weights = shutil.copy(files[0], tmp_path / "w.pt")
    path = export_model(weights, "aot", spec=NetworkSpec("dints", 3, 0.125), roi_size=ROI, opt_batch=2, device="cpu")
    assert path.startswith(str(tmp_path / "engines")) and path.endswith(".pt2")
    task = tiny_task(weights, background_compile=True)
    label, result = infer(task, files[1], fast_path=False)
    assert result["inference"]["backend"] == "aot" and result["inference"]["engine_file"] == path.split("/")[-1]
    assert not task.served._builds.running(path) and not task.served._builds.failed
    assert (label == torch_label).mean() > 0.999


def test_unwritable_engine_dir_leaves_requests_eager(files, torch_label, tmp_path, without_openvino):
    """A build that cannot even start (engine_dir not writable: here a path under a plain file) must not fail
    the request: it runs eagerly and says why."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    task = tiny_task(files[0], background_compile=True, backend_options=B.BackendOptions(
        roi_size=ROI, sw_batch_size=2, engine_dir=str(blocker / "engines")))
    for _ in range(2):  # and it is not retried on every request
        label, result = infer(task, files[1], fast_path=False)
        info = result["inference"]
        assert info["backend"] == "torch" and "cannot start the build" in info["note"], info
        np.testing.assert_array_equal(label, torch_label)
    assert len(task.served._builds.failed) == 1


def test_a_fixed_shape_backends_coarse_pass_runs_on_itself_in_windows(files, torch_label, tmp_path):
    """The fast path's coarse pass of a backend built for one window shape tiles the body box with that backend:
    the eager network (several times slower than OpenVINO on the CPU) is not called, and the label is the eager
    one's."""
    from lib.runtime.fast_path import FastPathOptions

    weights, image = files
    opts = B.BackendOptions(roi_size=ROI, sw_batch_size=2, engine_dir=str(tmp_path))
    task = tiny_task(weights, backend_options=opts, backend="torchscript",
                     fast_path=FastPathOptions(coarse_min_windows=1, margin_mm=48))  # the coarse pass runs here
    task.served.prepared("cpu", "torchscript")
    eager = task.served.network("cpu")
    eager.forward = lambda *a, **k: pytest.fail("the coarse pass ran the eager network")
    label, result = infer(task, image)
    info = result["inference"]
    assert info["backend"] == "torchscript" and info["coarse_windows"] > 1, info
    assert (label == torch_label).mean() > 0.999
