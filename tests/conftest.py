"""Shared fixtures: repository paths, the ../shared data (skipped with a reason where absent),
private copies of the model folder and of the sample datastore, and a running server."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

SHARED = Path(os.environ.get("DINTS_LABEL_SHARED", REPO_ROOT.parent / "shared"))
REAL_CT = SHARED / "data" / "real-ct" / "example_ct.nii.gz"
REAL_CT_REFERENCE = SHARED / "data" / "real-ct" / "example_ct_pancreas_reference.nii.gz"
CVPR_ARCH = SHARED / "data" / "dints" / "arch_code_cvpr.pth"
SAMPLE_DATASTORE = REPO_ROOT / "sample-datastore"
MODEL_DIR = REPO_ROOT / "model"


@pytest.fixture(scope="session")
def real_ct() -> Path:
    if not REAL_CT.exists():
        pytest.skip(f"real CT not available: {REAL_CT} is absent (../shared is not checked out beside the repo)")
    return REAL_CT


@pytest.fixture(scope="session")
def cvpr_arch() -> Path:
    if not CVPR_ARCH.exists():
        pytest.skip(f"DiNTS CVPR architecture not available: {CVPR_ARCH} is absent")
    return CVPR_ARCH


def copy_model_dir(dst: Path) -> Path:
    """A private copy of model/ so that training in a test never touches the shipped files."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in MODEL_DIR.iterdir():
        if f.is_file() and f.suffix in (".pt", ".pth", ".json"):
            shutil.copy2(f, dst / f.name)
    return dst


def copy_datastore(dst: Path) -> Path:
    """A private copy of the shipped sample datastore without server state files."""
    shutil.copytree(SAMPLE_DATASTORE, dst, ignore=shutil.ignore_patterns(".lock", "datastore_v2.json", "README.md"))
    return dst


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return copy_model_dir(tmp_path / "model")


@pytest.fixture
def studies(tmp_path) -> Path:
    return copy_datastore(tmp_path / "studies")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("module")


@pytest.fixture(scope="module")
def client(server, module_tmp):
    """The 3D Slicer plugin's client for the module's ``server`` fixture, with its own download folder
    (with the default /tmp the server's clean-up of its result file can delete the client's copy)."""
    from monailabel.client.client import MONAILabelClient

    tmp = module_tmp / "client"
    tmp.mkdir()
    return MONAILabelClient(server.url, tmpdir=str(tmp))
