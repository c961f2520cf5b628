"""The PACS datastore's label rules (``lib/datastore/dicomweb.py``), on the real :class:`PACSDatastore` over an
in-memory DICOMweb client (real DICOM series and SEGs written by dcmqi, as MONAI Label writes them):

* an image's label is its newest *usable* SEG: a newer SEG whose segments are no task label, or whose frames
  cannot be read, never hides an older good one (the image stays labelled and in the training data with it);
  an image whose SEGs are all unusable is unlabelled, and the reason is named;
* a submitted label is checked with the client's ``label_info`` (OHIF's raw ``.bin`` labelmap holds OHIF's segment
  indices), so the stored SEG has the right segments for the right voxels;
* a label that cannot be used is refused (422 with the reason) before anything is stored in the PACS: a submitted
  SEG without a task segment, and a SEG that would not read back as the label.

The same through Orthanc and the app: ``tests/e2e/test_pacs_ohif.py``.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from lib.data.dicom_series import series_files, write_series
from lib.datastore.seg_label import seg_on_image
from lib.errors import InputError

LABELS = {"background": 0, "pancreas": 1, "tumor": 2}
AFFINE = np.array([[1.5, 0, 0, -30.0], [0, 1.5, 0, 12.0], [0, 0, 3.0, -200.0], [0, 0, 0, 1]])
SHAPE = (32, 28, 10)
SUMMARY = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "StudyDate", "StudyTime")


class FakeDICOMweb:
    """What :class:`PACSDatastore` asks of a ``dicomweb_client`` client, over datasets held in memory."""

    base_url = "http://pacs.invalid/dicom-web"

    def __init__(self):
        self.series: dict[str, list[Dataset]] = {}
        self.stored: list[Dataset] = []

    def add(self, ds: Dataset) -> str:
        self.series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        return str(ds.SeriesInstanceUID)

    def search_for_series(self, search_filters=None, **_):
        out = []
        for instances in self.series.values():
            first = instances[0]
            if all(str(first.get(k, "")) == str(v) for k, v in (search_filters or {}).items()):
                summary = Dataset()
                for keyword in SUMMARY:
                    if keyword in first:
                        setattr(summary, keyword, first.get(keyword))
                out.append(summary.to_json_dict())
        return out

    def retrieve_series_metadata(self, study_instance_uid, series_instance_uid, **_):
        out = []
        for ds in self.series[series_instance_uid]:
            meta = copy.deepcopy(ds)
            del meta.PixelData
            out.append(meta.to_json_dict())
        return out

    def retrieve_series(self, study_instance_uid, series_instance_uid, **_):
        return [copy.deepcopy(ds) for ds in self.series[series_instance_uid]]

    def store_instances(self, datasets, **_):
        answer = Dataset()
        for ds in datasets:
            self.stored.append(ds)
            uid = self.add(ds)
            answer.RetrieveURL = f"{self.base_url}/studies/{ds.StudyInstanceUID}/series/{uid}"
        return answer


@pytest.fixture(autouse=True)
def dcmqi_on_path(monkeypatch):
    bin_dir = os.path.dirname(sys.executable)  # dcmqi (requirements.txt) puts itkimage2segimage beside python
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ.get("PATH", ""))
    assert shutil.which("itkimage2segimage"), "dcmqi's itkimage2segimage is not installed (requirements.txt)"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One CT series on disk and in memory, its NIfTI as the datastore reads it, and a pancreas + tumour label."""
    from monailabel.datastore.utils.convert import dicom_to_nifti

    root = tmp_path_factory.mktemp("pacs_case")
    vol = np.random.default_rng(5).integers(-1000, 400, size=SHAPE).astype(np.int16)
    uids = write_series(vol, AFFINE, root / "series", "case")
    image = root / "image.nii.gz"
    shutil.move(dicom_to_nifti(str(root / "series")), image)
    label = np.zeros(nib.load(image).shape, np.uint8)
    label[5:15, 5:15, 2:6] = 1
    label[8:11, 8:11, 3:5] = 2
    return {"root": root, "uids": uids, "image": image, "label": label,
            "ct": [pydicom.dcmread(str(p)) for p in series_files(root / "series")]}


def make_seg(case, tmp_path, label: np.ndarray, names: list[str], date: str) -> Dataset:
    """A SEG of ``label`` (on the series' grid) as MONAI Label writes it, dated ``date``."""
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    label_file = tmp_path / f"label_{date}.nii.gz"
    nib.save(nib.Nifti1Image(label, nib.load(case["image"]).affine), label_file)
    path = nifti_to_dicom_seg(str(case["root"] / "series"), str(label_file), [{"name": n} for n in names], use_itk=True)
    ds = pydicom.dcmread(path)
    os.unlink(path)
    ds.SeriesDate = ds.ContentDate = date
    return ds


def corrupt(seg: Dataset, date: str) -> Dataset:
    """A copy of ``seg`` as a new, newer series whose frames are cut short (its metadata looks fine)."""
    from pydicom.uid import generate_uid

    bad = copy.deepcopy(seg)
    bad.SeriesInstanceUID, bad.SOPInstanceUID = generate_uid(), generate_uid()
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    bad.SeriesDate = bad.ContentDate = date
    bad.PixelData = seg.PixelData[:10]
    return bad


def datastore(pacs, tmp_path):
    from lib.datastore.dicomweb import PACSDatastore

    return PACSDatastore(pacs, {"Modality": "CT"}, LABELS, cache_path=str(tmp_path / "cache"), refresh_seconds=3600)


def pacs_with(case, *segs) -> FakeDICOMweb:
    pacs = FakeDICOMweb()
    for ds in case["ct"]:
        pacs.add(copy.deepcopy(ds))
    for seg in segs:
        pacs.add(seg)
    return pacs


def label_of(ds, image_id) -> np.ndarray:
    path = ds.get_label_uri(image_id, "final")
    assert path, f"no label for {image_id}: {ds.label_problem(image_id)}"
    return np.asarray(nib.load(path).dataobj)


# ---- an image's label: its newest usable SEG --------------------------------------------------------------
def test_newer_unusable_segs_never_hide_an_older_good_one(case, tmp_path):
    from lib.trainers.datalist import labelled_datalist

    good = make_seg(case, tmp_path, case["label"], ["pancreas", "tumor"], "20200101")
    other = np.where(case["label"] > 0, 1, 0).astype(np.uint8)
    wrong_names = make_seg(case, tmp_path, other, ["liver"], "20230101")  # no segment is a task label
    broken = corrupt(good, "20240101")  # the newest: its frames cannot be read
    pacs = pacs_with(case, good, wrong_names, broken)
    ds = datastore(pacs, tmp_path)
    ct = case["uids"]["SeriesInstanceUID"]

    assert ds.get_labeled_images() == [ct]
    assert np.array_equal(label_of(ds, ct), case["label"])  # the older good SEG's content, on the image grid
    assert ds.label_problem(ct) is None
    items, skipped = labelled_datalist(ds, {"pancreas": 1, "tumor": 2})
    assert [d["id"] for d in items] == [ct] and skipped == []
    # the broken SEG is remembered as such: a fresh datastore (a training process) passes over it too
    ds.refresh()
    assert ds.get_labeled_images() == [ct]
    again = datastore(pacs, tmp_path)
    assert np.array_equal(label_of(again, ct), case["label"])
    listed = ds.json()["objects"][ct]["labels"]["final"]["info"]["SeriesInstanceUID"]
    assert listed == str(good.SeriesInstanceUID)


def test_a_newer_good_seg_replaces_the_older_one(case, tmp_path):
    old = make_seg(case, tmp_path, case["label"], ["pancreas", "tumor"], "20200101")
    pancreas_only = np.where(case["label"] > 0, 1, 0).astype(np.uint8)
    new = make_seg(case, tmp_path, pancreas_only, ["pancreas"], "20240101")
    ds = datastore(pacs_with(case, new, old), tmp_path)
    assert np.array_equal(label_of(ds, case["uids"]["SeriesInstanceUID"]), pancreas_only)


def test_an_image_whose_segs_are_all_unusable_is_unlabelled_with_the_reason(case, tmp_path):
    good = make_seg(case, tmp_path, case["label"], ["pancreas", "tumor"], "20200101")
    broken = corrupt(good, "20240101")
    ds = datastore(pacs_with(case, broken), tmp_path)
    ct = case["uids"]["SeriesInstanceUID"]
    assert ds.get_label_uri(ct, "final") == ""
    assert "frames cannot be read" in ds.label_problem(ct)
    assert ds.get_labeled_images() == []
    assert ds.get_unlabeled_images() == [ct]  # Next Sample offers it again

    other = np.where(case["label"] > 0, 1, 0).astype(np.uint8)
    ds = datastore(pacs_with(case, make_seg(case, tmp_path, other, ["liver"], "20230101")), tmp_path / "b")
    assert ds.get_labeled_images() == []
    assert "liver" in ds.label_problem(ct)


# ---- saving ---------------------------------------------------------------------------------------------
def test_an_ohif_labelmap_is_stored_with_the_segments_its_label_info_names(case, tmp_path):
    """OHIF's labelmap holds its segment indices (here the tumour was drawn first: 1 tumour, 2 pancreas)."""
    pacs = pacs_with(case)
    ds = datastore(pacs, tmp_path)
    ct = case["uids"]["SeriesInstanceUID"]
    ohif = np.zeros_like(case["label"])
    ohif[case["label"] == 2] = 1
    ohif[case["label"] == 1] = 2
    raw = tmp_path / "label.bin"
    raw.write_bytes(ohif.tobytes(order="F"))  # the viewer's raw volume, in the image's voxel order
    label_info = [{"name": "tumor", "idx": 1, "color": [255, 0, 0]}, {"name": "pancreas", "idx": 2, "color": [0, 255, 0]}]
    ds.save_label(ct, str(raw), "final", {"label_info": label_info})

    assert len(pacs.stored) == 1
    seg = pacs.stored[0]
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert sorted(names.values()) == ["pancreas", "tumor"]
    stored = tmp_path / "stored_seg.dcm"
    seg.save_as(stored)
    assert np.array_equal(seg_on_image(stored, case["image"], LABELS).data, case["label"])
    assert ds.get_labeled_images() == [ct]
    assert np.array_equal(label_of(ds, ct), case["label"])


def test_a_submitted_seg_without_a_task_segment_is_refused_and_nothing_is_stored(case, tmp_path):
    pacs = pacs_with(case)
    ds = datastore(pacs, tmp_path)
    ct = case["uids"]["SeriesInstanceUID"]
    seg = make_seg(case, tmp_path, np.where(case["label"] > 0, 1, 0).astype(np.uint8), ["liver"], "20240101")
    path = tmp_path / "label.dcm"
    seg.save_as(path)
    with pytest.raises(InputError) as refused:
        ds.save_label(ct, str(path), "final", {})
    assert refused.value.status_code == 422 and "liver" in refused.value.message
    assert pacs.stored == [] and ds.get_labeled_images() == []

    usable = make_seg(case, tmp_path, case["label"], ["pancreas", "tumor"], "20240102")  # a good SEG is taken
    usable.save_as(path)
    ds.save_label(ct, str(path), "final", {})
    assert len(pacs.stored) == 1 and np.array_equal(label_of(ds, ct), case["label"])


def test_a_seg_that_would_not_read_back_as_the_label_is_not_stored(case, tmp_path, monkeypatch):
    """The SEG is read back onto the image grid before it is stored: a writer that loses voxels is caught."""
    import monailabel.datastore.utils.convert as convert

    real = convert.nifti_to_dicom_seg

    def lossy(series_dir, label, label_info, *args, **kwargs):
        img = nib.load(label)
        data = np.asarray(img.dataobj).copy()
        data[:, :, 3] = 0  # one slice lost on the way
        cut = tmp_path / "cut.nii.gz"
        nib.save(nib.Nifti1Image(data, img.affine), cut)
        return real(series_dir, str(cut), label_info, *args, **kwargs)

    monkeypatch.setattr(convert, "nifti_to_dicom_seg", lossy)
    pacs = pacs_with(case)
    ds = datastore(pacs, tmp_path)
    label = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(case["label"], nib.load(case["image"]).affine), label)
    with pytest.raises(InputError) as refused:
        ds.save_label(case["uids"]["SeriesInstanceUID"], str(label), "final", {})
    assert refused.value.status_code == 422 and "voxel(s) changed" in refused.value.message
    assert pacs.stored == []
