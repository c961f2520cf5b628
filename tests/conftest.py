"""Fixtures for every kind of test (tests/unit, tests/server, tests/e2e): the ../shared data (skipped with a
reason where absent), private copies of the model folder and of the sample datastore, a per-module folder.

The server fixture factory (``start_server``) and the Slicer client are in tests/server/conftest.py; helpers
shared by several kinds are in tests/support/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from support.repo import CVPR_ARCH, REAL_CT, copy_datastore, copy_model_dir  # noqa: E402


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


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return copy_model_dir(tmp_path / "model")


@pytest.fixture
def studies(tmp_path) -> Path:
    return copy_datastore(tmp_path / "studies")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("module")
