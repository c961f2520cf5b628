"""The versioned datastore in-process: names, label checks and the repair of every state a killed save or
delete can leave (simulated exactly, file by file, in the order the datastore writes them)."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from support.repo import copy_datastore
from support.safety_helpers import label_for, sha

from lib.datastore.history import HISTORY_DIR, INDEX
from lib.datastore.label_check import check_label
from lib.datastore.local import AnnotationDatastore
from lib.datastore.names import check_name, inside, name_problem
from lib.errors import InputError

LABELS = {"pancreas": 1, "tumor": 2}
IMAGE = "phantom_009"


def open_store(studies):
    return AnnotationDatastore(str(studies), labels=LABELS, extensions=("*.nii.gz", "*.nii", "*.nrrd"),
                               auto_reload=False)


@pytest.mark.parametrize("value", ["phantom_009", "1.2.840.113619.2.55", "case-01+b", "A" * 128])
def test_valid_names(value):
    assert name_problem(value) is None and check_name(value) == value


@pytest.mark.parametrize("value", ["", "..", "a..b", "../x", "a/b", "a\\b", "/abs", ".hidden", "-x", "a b", "a\x00",
                                   "A" * 129, None, 3])
def test_invalid_names_are_400(value):
    with pytest.raises(InputError) as err:
        check_name(value, "image id")
    assert err.value.status_code == 400


def test_inside_follows_links(tmp_path):
    (tmp_path / "in").mkdir()
    os.symlink("/etc", tmp_path / "in" / "link")
    assert inside(tmp_path / "in", tmp_path / "in" / "x")
    assert not inside(tmp_path / "in", tmp_path / "in" / "link" / "passwd")


def test_check_label_reads_nrrd_and_lps_geometry(tmp_path):
    """A label stored in another voxel order is not on the image's grid; the same order is, in either format."""
    from lib.transforms.writer import write_nrrd

    img = nib.load(str(copy_datastore(tmp_path / "s") / f"{IMAGE}.nii.gz"))
    data = np.zeros(img.shape, np.uint8)
    data[3:6, 3:6, 3:6] = 2
    write_nrrd(data, img.affine, str(tmp_path / "l.nrrd"))
    assert check_label(str(tmp_path / "l.nrrd"), str(tmp_path / "s" / f"{IMAGE}.nii.gz"), LABELS).values == {0: data.size - 27, 2: 27}
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = img.shape[0] - 1, img.shape[1] - 1
    nib.save(nib.Nifti1Image(data[::-1, ::-1], img.affine @ flip), str(tmp_path / "lps.nii.gz"))
    with pytest.raises(InputError, match="orientation"):
        check_label(str(tmp_path / "lps.nii.gz"), str(tmp_path / "s" / f"{IMAGE}.nii.gz"), LABELS)


def _save(store, studies, tmp_path, seed):
    path = label_for(studies, IMAGE, tmp_path / f"v{seed}.nii.gz", seed=seed)
    store.save_label(IMAGE, str(path), "final", {})
    return path


def _index(studies):
    return json.loads((studies / HISTORY_DIR / "final" / IMAGE / INDEX).read_text())


def test_crash_after_index_before_current_is_completed(tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    first = _save(store, studies, tmp_path, 1)
    second = _save(store, studies, tmp_path, 2)
    current = studies / "labels" / "final" / f"{IMAGE}.nii.gz"
    shutil.copyfile(first, current)  # as if killed after the index named revision 2, before the copy
    store = open_store(studies)
    assert sha(current) == sha(second)
    assert store.label_revision(IMAGE, "final") == 2 and len(_index(studies)["versions"]) == 2


def test_crash_before_index_leaves_previous_label_and_no_stray_file(tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    first = _save(store, studies, tmp_path, 1)
    folder = studies / HISTORY_DIR / "final" / IMAGE
    shutil.copyfile(label_for(studies, IMAGE, tmp_path / "x.nii.gz", seed=5), folder / "r00002.nii.gz")
    (folder / ".r00003.nii.gz.abc.tmp").write_bytes(b"half")
    store = open_store(studies)
    assert sorted(os.listdir(folder)) == [INDEX, "r00001.nii.gz"]
    assert sha(studies / "labels" / "final" / f"{IMAGE}.nii.gz") == sha(first)
    assert store.label_revision(IMAGE, "final") == 1


def test_first_save_killed_before_current_file_is_completed(tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    first = _save(store, studies, tmp_path, 1)
    os.unlink(studies / "labels" / "final" / f"{IMAGE}.nii.gz")
    open_store(studies)
    assert sha(studies / "labels" / "final" / f"{IMAGE}.nii.gz") == sha(first)


def test_label_edited_by_hand_becomes_a_version_not_overwritten(tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    _save(store, studies, tmp_path, 1)
    _save(store, studies, tmp_path, 2)
    hand = label_for(studies, IMAGE, tmp_path / "hand.nii.gz", seed=9)
    shutil.copyfile(hand, studies / "labels" / "final" / f"{IMAGE}.nii.gz")
    store = open_store(studies)
    versions = _index(studies)["versions"]
    assert len(versions) == 3 and versions[-1]["sha256"] == sha(hand) and versions[-1]["source"] == "found on disk"


def test_delete_killed_after_its_index_entry_is_completed(tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    first = _save(store, studies, tmp_path, 1)
    store.remove_label(IMAGE, "final")
    shutil.copyfile(first, studies / "labels" / "final" / f"{IMAGE}.nii.gz")  # the unlink never happened
    store = open_store(studies)
    assert not (studies / "labels" / "final" / f"{IMAGE}.nii.gz").exists()
    assert store.get_label_uri(IMAGE, "final") == ""


def _all_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def test_disk_full_while_storing_a_version_changes_nothing(tmp_path, monkeypatch):
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    first = _save(store, studies, tmp_path, 1)
    files = {f: sha(studies / f) for f in _all_files(studies)}
    import lib.atomic as atomic

    def full(src, dst):
        with open(dst, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(atomic.shutil, "copyfile", full)
    with pytest.raises(InputError) as err:
        _save(store, studies, tmp_path, 2)
    assert err.value.status_code == 503 and "No space left" in err.value.message
    assert {f: sha(studies / f) for f in _all_files(studies)} == files  # no partial or temporary file anywhere
    assert sha(studies / "labels" / "final" / f"{IMAGE}.nii.gz") == sha(first)


def test_datastore_file_failure_after_the_label_is_stored(tmp_path, monkeypatch):
    """The label and its version are on disk; a failed datastore_v2.json write leaves the old file whole and
    the next start finds the label."""
    studies = copy_datastore(tmp_path / "studies")
    store = open_store(studies)
    before = (studies / "datastore_v2.json").read_bytes()
    import lib.atomic as atomic

    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("datastore_v2.json"):
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    label = _save(store, studies, tmp_path, 1)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert (studies / "datastore_v2.json").read_bytes() == before
    assert not [p for p in os.listdir(studies) if p.endswith(".tmp")]
    reopened = open_store(studies)
    assert sha(reopened.get_label_uri(IMAGE, "final")) == sha(label)
    assert reopened.label_revision(IMAGE, "final") == 1
