"""DICOM series and SEG handling for a PACS datastore: series written with their geometry, SEGs back on the image grid.

The SEGs are written by dcmqi's ``itkimage2segimage`` exactly as MONAI Label's label upload writes them (it
keeps only the frames that hold a label: a cropped SEG with its own origin).
"""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from lib.data.dicom_series import series_files, write_series
from lib.datastore.seg_label import SegError, resample_nearest, seg_on_image, write_seg_label

LABELS = {"pancreas": 1, "tumor": 2}


def volume(shape=(40, 36, 20)):
    rng = np.random.default_rng(3)
    return rng.integers(-1000, 400, size=shape).astype(np.int16)


AFFINES = {
    "ras": np.array([[1.5, 0, 0, -30.0], [0, 1.5, 0, 12.0], [0, 0, 3.0, -200.0], [0, 0, 0, 1]]),
    "lps": np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 40.0], [0, 0, 3.0, -200.0], [0, 0, 0, 1]]),
    "permuted": np.array([[0, 1.5, 0, -30.0], [1.5, 0, 0, 12.0], [0, 0, -3.0, 10.0], [0, 0, 0, 1]]),
}


def series_as_nifti(folder, tmp_path):
    """The series read back the way MONAI Label's DICOMweb datastore reads it (SimpleITK's series reader)."""
    from monailabel.datastore.utils.convert import dicom_to_nifti

    out = dicom_to_nifti(str(folder))
    dst = tmp_path / "image.nii.gz"
    shutil.move(out, dst)
    return dst


@pytest.mark.parametrize("kind", sorted(AFFINES))
def test_written_series_keeps_every_voxel_at_its_world_position(kind, tmp_path):
    vol, affine = volume(), AFFINES[kind]
    write_series(vol, affine, tmp_path / "series", "case")
    assert len(series_files(tmp_path / "series")) == vol.shape[2]
    back = nib.load(series_as_nifti(tmp_path / "series", tmp_path))
    data = np.asarray(back.dataobj)
    # voxel of the original -> world -> voxel of what was read back: the same HU everywhere
    to_back = np.linalg.inv(back.affine) @ affine
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in vol.shape), indexing="ij"), -1).reshape(-1, 3)
    mapped = np.rint(ijk @ to_back[:3, :3].T + to_back[:3, 3]).astype(int)
    assert (mapped >= 0).all() and (mapped < np.array(data.shape)).all()
    assert np.array_equal(data[tuple(mapped.T)], vol[tuple(ijk.T)])


def seg_of(label: np.ndarray, series_folder, tmp_path, names):
    """A DICOM SEG of ``label`` (on the series' grid) as MONAI Label writes it on a label upload."""
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    assert shutil.which("itkimage2segimage"), "dcmqi's itkimage2segimage is not on PATH (dcmqi is in requirements.txt)"
    image = series_as_nifti(series_folder, tmp_path)
    label_file = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(label, nib.load(image).affine), label_file)
    seg = nifti_to_dicom_seg(str(series_folder), str(label_file), [{"name": n} for n in names], use_itk=True)
    dst = tmp_path / "seg" / "seg.dcm"
    dst.parent.mkdir()
    shutil.move(seg, dst)
    return dst.parent, image


@pytest.mark.parametrize("kind", ["ras", "permuted"])
def test_a_cropped_seg_comes_back_voxel_for_voxel_on_the_image_grid(kind, tmp_path):
    vol = volume()
    write_series(vol, AFFINES[kind], tmp_path / "series", "case")
    image = series_as_nifti(tmp_path / "series", tmp_path)
    shape = nib.load(image).shape
    label = np.zeros(shape, np.uint8)
    label[5:20, 8:22, 5:11] = 1  # the SEG keeps only these frames: its own, shifted origin
    label[10:14, 12:16, 7:9] = 2
    seg_dir, image = seg_of(label, tmp_path / "series", tmp_path, ["pancreas", "tumor"])
    import pydicom

    ds = pydicom.dcmread(str(next(seg_dir.iterdir())))
    assert int(ds.NumberOfFrames) < 2 * shape[2], "the SEG should be cropped to the labelled frames"
    found = seg_on_image(seg_dir, image, LABELS)
    assert found.data.shape == shape
    assert np.array_equal(found.data, label)
    out = tmp_path / "final.nii.gz"
    write_seg_label(seg_dir, image, LABELS, out)
    written = nib.load(out)
    assert np.allclose(written.affine, nib.load(image).affine) and np.array_equal(np.asarray(written.dataobj), label)


def test_segments_map_by_name_not_by_their_number(tmp_path):
    """A label holding only the tumour has it as the SEG's segment 1: it must come back as 2, not as pancreas."""
    write_series(volume(), AFFINES["ras"], tmp_path / "series", "case")
    image = series_as_nifti(tmp_path / "series", tmp_path)
    label = np.zeros(nib.load(image).shape, np.uint8)
    label[10:14, 12:16, 7:9] = 2
    seg_dir, image = seg_of(label, tmp_path / "series", tmp_path, ["tumor"])
    found = seg_on_image(seg_dir, image, LABELS)
    assert found.segments == {1: "tumor"} and np.array_equal(found.data, label)


def test_resampling_onto_a_shifted_grid_is_nearest_and_keeps_edge_frames():
    image_affine = AFFINES["lps"]
    shape = (40, 36, 20)
    # a SEG grid starting at voxel (4, 6, 5) of the image, its origin off by rounding (1e-4 mm)
    start = np.array([4, 6, 5])
    seg_affine = image_affine.copy()
    seg_affine[:3, 3] = (image_affine @ np.array([*start, 1]))[:3] + 1e-4
    seg = np.zeros((10, 8, 6), np.uint8)
    seg[:, :, 0] = 1  # first and last frames: kept despite the rounding
    seg[:, :, -1] = 2
    seg[3:5, 3:5, 2:4] = 2
    out = resample_nearest(seg, seg_affine, image_affine, shape)
    expected = np.zeros(shape, np.uint8)
    expected[4:14, 6:14, 5:11] = seg
    assert np.array_equal(out, expected)


def test_what_is_not_a_usable_seg_is_refused_with_its_reason(tmp_path):
    write_series(volume(), AFFINES["ras"], tmp_path / "series", "case")
    ct_slice = series_files(tmp_path / "series")[0]
    with pytest.raises(SegError, match="not a DICOM SEG"):
        seg_on_image(ct_slice, series_as_nifti(tmp_path / "series", tmp_path), LABELS)
    image = series_as_nifti(tmp_path / "series", tmp_path)
    label = np.zeros(nib.load(image).shape, np.uint8)
    label[10:14, 12:16, 7:9] = 1
    seg_dir, image = seg_of(label, tmp_path / "series", tmp_path, ["liver"])
    with pytest.raises(SegError, match="liver"):
        seg_on_image(seg_dir, image, LABELS)
    assert not os.path.exists(tmp_path / "final.nii.gz")
