"""Fixtures of the in-process tests. The backend tests (test_backends.py, test_cpu_layouts.py,
test_reduced_precision.py, test_openvino_backend.py): the tiny network's weights and test CT, and the gates'
calibration images. The interactive tests (test_interactive_task.py, test_annotators.py): the interactive infer task
on a DiNTS network of fixed random weights, with the network click path or the default walker, and a small phantom
volume. Module-scoped: each test module gets its own files, task and cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from support.repo import MODEL_DIR
from support.tiny_models import tiny_calibration, tiny_files


@pytest.fixture(scope="module")
def files(module_tmp):
    """(weights, CT) of the tiny DiNTS and its test CT."""
    return tiny_files(module_tmp)


@pytest.fixture(scope="module")
def calibration():
    """The reduced-precision gates' calibration images at the tiny task's grid."""
    return tiny_calibration()


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    from lib.networks.arch_code import load_arch_code
    from lib.networks.factory import build_dints, save_checkpoint

    d = tmp_path_factory.mktemp("interactive_model")
    shutil.copy(MODEL_DIR / "dints_pancreas_cpu_arch.pth", d / "dints_pancreas_cpu_arch.pth")
    arch = load_arch_code(str(d / "dints_pancreas_cpu_arch.pth"))
    torch.manual_seed(0)
    net = build_dints(arch, 0.25, 3, in_channels=4)
    save_checkpoint(net, arch, str(d / "pretrained_deepedit_pancreas_cpu.pt"), half=True)
    return d


def _interactive_task(model_dir, click_model: str):
    from lib.configs.interactive import InteractiveConfig

    cfg = InteractiveConfig()
    # 64^3 windows over a grid smaller than one: every pass is one window (the mechanics, at a test's cost)
    cfg.init("deepedit_pancreas", str(model_dir), {"profile": "cpu", "roi_size": "64,64,64",
                                                   "click_model": click_model}, None)
    return cfg.infer()["deepedit_pancreas"]


@pytest.fixture(scope="module")
def task(random_model_dir):
    return _interactive_task(random_model_dir, "network")


@pytest.fixture(scope="module")
def walker_task(random_model_dir):
    return _interactive_task(random_model_dir, "walker")


@pytest.fixture(scope="module")
def volume():
    from lib.data.phantom import make_phantom

    ph = make_phantom(9501, preset="sample", shape=(40, 40, 20), spacing=(2.5, 2.5, 5.0))
    return ph.image.astype(np.int16), ph.affine, ph.label
