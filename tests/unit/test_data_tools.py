"""The phantom folder writer (make_phantoms) and the real-data importer (import_studies)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lib.data import import_studies, make_phantoms
from lib.data.phantom import make_phantom, save_phantom

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


def exit_code(fn, argv) -> int:
    """Return code of a CLI ``main`` run in-process (argparse errors raise SystemExit)."""
    try:
        return fn(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def msd_dir(tmp_path_factory) -> Path:
    """A small MSD Task07-style folder: 6 cases, the first 5 labelled, plus the macOS junk the real tar has."""
    out = tmp_path_factory.mktemp("msd") / "Task07_Pancreas"
    assert make_phantoms.main(["--out", str(out), "--count", "6", "--labelled", "5", "--seed", "40",
                               "--layout", "msd", "--quiet"]) == 0
    (out / "imagesTr" / "._pancreas_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (out / "imagesTr" / ".DS_Store").write_bytes(b"junk")
    return out


# ---- make_phantoms ------------------------------------------------------------------------------------------
def test_msd_layout_dataset_json_is_valid(msd_dir):
    meta = json.loads((msd_dir / "dataset.json").read_text())
    for key in ("name", "description", "modality", "labels", "numTraining", "numTest", "training", "test"):
        assert key in meta, key
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "pancreas", "2": "cancer"}
    assert meta["numTraining"] == len(meta["training"]) == 5
    assert meta["numTest"] == len(meta["test"]) == 1
    for item in meta["training"]:
        assert item["image"].startswith("./imagesTr/") and item["label"].startswith("./labelsTr/")
        img, lab = nib.load(msd_dir / item["image"]), nib.load(msd_dir / item["label"])
        assert img.shape == lab.shape and np.allclose(img.affine, lab.affine)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2}
    for path in meta["test"]:
        assert path.startswith("./imagesTs/") and (msd_dir / path).is_file()
    assert sorted(p.name for p in (msd_dir / "labelsTr").iterdir()) == [f"pancreas_00{i}.nii.gz" for i in range(1, 6)]


def test_monailabel_layout_and_reproducibility(tmp_path):
    out = tmp_path / "studies"
    assert make_phantoms.main(["--out", str(out), "--count", "3", "--labelled", "1", "--seed", "7", "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["phantom_000.nii.gz", "phantom_001.nii.gz", "phantom_002.nii.gz"]
    assert [p.name for p in (out / "labels" / "final").iterdir()] == ["phantom_000.nii.gz"]
    ph = make_phantom(8, "sample")  # case 1 is seed 7 + 1
    assert np.array_equal(np.asarray(nib.load(out / "phantom_001.nii.gz").dataobj), ph.image)
    copy = tmp_path / "again"
    assert make_phantoms.main(["--out", str(copy), "--count", "3", "--labelled", "1", "--seed", "7", "--quiet"]) == 0
    for p in out.rglob("*.nii.gz"):
        assert p.read_bytes() == (copy / p.relative_to(out)).read_bytes()


def test_make_phantoms_refuses_a_full_folder_and_bad_arguments(tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert exit_code(make_phantoms.main, ["--out", str(out), "--count", "1"]) == 2
    assert exit_code(make_phantoms.main, ["--out", str(tmp_path / "a"), "--count", "2", "--labelled", "3"]) == 2
    assert exit_code(make_phantoms.main, ["--out", str(tmp_path / "b"), "--count", "0"]) == 2
    assert exit_code(make_phantoms.main, ["--out", str(tmp_path / "c"), "--count", "1", "--preset", "huge"]) == 2
    # --force writes into it and keeps files the tool did not write
    assert make_phantoms.main(["--out", str(out), "--count", "1", "--force", "--quiet"]) == 0
    assert (out / "keep.txt").exists() and (out / "phantom_000.nii.gz").exists()


def test_cli_entry_points_help_and_errors(tmp_path):
    res = run_module("lib.data.make_phantoms", "--help")
    assert res.returncode == 0
    for option in ("--out", "--count", "--labelled", "--seed", "--preset", "--layout", "--force"):
        assert option in res.stdout
    res = run_module("lib.data.make_phantoms", "--out", str(tmp_path / "x"), "--count", "-1")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--count" in res.stderr
    res = run_module("lib.data.import_studies", "--help")
    assert res.returncode == 0
    for option in ("--folds", "--seed", "--link", "--datalist", "--labels", "--validation-fraction"):
        assert option in res.stdout
    res = run_module("lib.data.import_studies", str(tmp_path / "missing"), str(tmp_path / "dst"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "does not exist" in res.stderr


# ---- import_studies -------------------------------------------------------------------------------------------
def test_import_msd_folder_makes_studies_and_five_folds(msd_dir, tmp_path):
    dst = tmp_path / "studies"
    assert import_studies.main([str(msd_dir), str(dst), "--quiet"]) == 0
    images = sorted(p.name for p in dst.glob("*.nii.gz"))
    assert images == [f"pancreas_00{i}.nii.gz" for i in range(1, 7)]  # no "._" or hidden files
    assert sorted(p.name for p in (dst / "labels" / "final").iterdir()) == images[:5]
    data = json.loads((dst / "datalist.json").read_text())
    assert {"training", "validation", "testing"} <= set(data)
    folds = [item["fold"] for item in data["training"]]
    assert sorted(folds) == [0, 1, 2, 3, 4]  # 5 labelled cases, one per fold
    stems = [Path(item["image"]).name for item in data["training"]]
    assert sorted(stems) == images[:5] and len(set(stems)) == 5  # every labelled case exactly once
    for item in data["training"]:
        assert (dst / item["image"]).is_file() and (dst / item["label"]).is_file()
        assert Path(item["image"]).name == Path(item["label"]).name
    assert [Path(t["image"]).name for t in data["testing"]] == ["pancreas_006.nii.gz"]
    # deterministic: the same import elsewhere writes the same datalist
    dst2 = tmp_path / "studies2"
    assert import_studies.main([str(msd_dir), str(dst2), "--quiet"]) == 0
    assert json.loads((dst2 / "datalist.json").read_text()) == data
    # another seed moves cases between folds
    dst3 = tmp_path / "studies3"
    assert import_studies.main([str(msd_dir), str(dst3), "--quiet", "--seed", "5"]) == 0
    other = json.loads((dst3 / "datalist.json").read_text())
    assert [i["fold"] for i in other["training"]] != folds


def test_import_options_link_datalist_validation(msd_dir, tmp_path):
    dst = tmp_path / "linked"
    datalist = tmp_path / "lists" / "dl.json"
    assert import_studies.main([str(msd_dir), str(dst), "--link", "--datalist", str(datalist), "--folds", "2",
                                "--validation-fraction", "0.4", "--quiet"]) == 0
    assert (dst / "pancreas_001.nii.gz").is_symlink() and (dst / "labels" / "final" / "pancreas_001.nii.gz").is_symlink()
    data = json.loads(datalist.read_text())
    assert len(data["validation"]) == 2 and len(data["training"]) == 3
    assert {i["fold"] for i in data["training"]} <= {0, 1}
    for item in data["training"] + data["validation"]:
        assert item["image"].startswith("../") and (datalist.parent / item["image"]).is_file()
    # importing again without --force is refused
    assert exit_code(import_studies.main, [str(msd_dir), str(dst), "--quiet"]) == 2
    assert import_studies.main([str(msd_dir), str(dst), "--quiet", "--force"]) == 0


def test_import_plain_folder_with_labels_and_bad_label(tmp_path, capsys):
    src = tmp_path / "cts"
    src.mkdir()
    a, b = make_phantom(60, "sample", shape=(40, 40, 12)), make_phantom(61, "sample", shape=(36, 40, 12))
    save_phantom(a, src / "case_a.nii.gz", src / "labels" / "case_a.nii.gz")
    save_phantom(b, src / "case_b.nrrd")
    save_phantom(a, src / "case_c.nii")  # label of the wrong shape below
    save_phantom(b, tmp_path / "wrong.nii.gz", src / "labels" / "case_c.nii.gz")
    (src / "._case_a.nii.gz").write_bytes(b"junk")
    (src / "notes.txt").write_text("not an image")
    dst = tmp_path / "studies"
    assert exit_code(import_studies.main, [str(src), str(dst), "--quiet"]) == 1  # case_c refused
    err = capsys.readouterr().err
    assert "case_c" in err and "shape" in err and "Traceback" not in err
    assert sorted(p.name for p in dst.iterdir() if p.is_file() and p.name != "datalist.json") == \
        ["case_a.nii.gz", "case_b.nrrd"]
    assert [p.name for p in (dst / "labels" / "final").iterdir()] == ["case_a.nii.gz"]
    data = json.loads((dst / "datalist.json").read_text())
    assert [Path(i["image"]).name for i in data["training"]] == ["case_a.nii.gz"]
    assert [Path(i["image"]).name for i in data["testing"]] == ["case_b.nrrd"]
    assert not [p for p in dst.rglob(".*")]  # no temporary files left


def test_import_labels_option_and_errors(tmp_path, capsys):
    src, masks = tmp_path / "imgs", tmp_path / "masks"
    ph = make_phantom(62, "sample", shape=(32, 32, 10))
    save_phantom(ph, src / "x.nii.gz", masks / "x.nii.gz")
    dst = tmp_path / "out"
    assert import_studies.main([str(src), str(dst), "--labels", str(masks), "--quiet"]) == 0
    assert (dst / "labels" / "final" / "x.nii.gz").is_file()
    assert exit_code(import_studies.main, [str(src), str(tmp_path / "o2"), "--labels", str(tmp_path / "none")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert exit_code(import_studies.main, [str(empty), str(tmp_path / "o3")]) == 2
    assert "no NIfTI" in capsys.readouterr().err
    bad = tmp_path / "bad_msd"
    shutil.copytree(tmp_path / "imgs", bad / "imagesTr")
    (bad / "labelsTr").mkdir()
    (bad / "dataset.json").write_text("{not json")
    assert exit_code(import_studies.main, [str(bad), str(tmp_path / "o4")]) == 2
    assert "dataset.json" in capsys.readouterr().err
    assert not (tmp_path / "o4" / "datalist.json").exists()
    assert os.listdir(tmp_path / "o2") == [] if (tmp_path / "o2").exists() else True
