"""Repository paths, the ../shared data, and private copies of the model folder and of the sample datastore."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
SHARED = Path(os.environ.get("DINTS_LABEL_SHARED", REPO_ROOT.parent / "shared"))
REAL_CT = SHARED / "data" / "real-ct" / "example_ct.nii.gz"
REAL_CT_REFERENCE = SHARED / "data" / "real-ct" / "example_ct_pancreas_reference.nii.gz"
CVPR_ARCH = SHARED / "data" / "dints" / "arch_code_cvpr.pth"
SAMPLE_DATASTORE = REPO_ROOT / "sample-datastore"
MODEL_DIR = REPO_ROOT / "model"


def shipped(path: Path, how: str = "") -> Path:
    """A file the repository ships (under model/ or sample-datastore/): its absence is a failure, not a skip."""
    assert Path(path).exists(), f"shipped file missing: {path}" + (f" ({how})" if how else "")
    return Path(path)


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
