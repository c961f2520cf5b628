"""The faster NIfTI reader must give exactly what MONAI's own reader gives (voxels, affine, metadata) for the NIfTI
files a site sends: int16 CT, scaled voxels, unsigned 16 bit, big-endian, a trailing singleton axis, NIfTI-2 and
uncompressed files; and the server's loader must refuse a broken file as before."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from lib.errors import InputError
from lib.transforms.load import LoadCTd
from lib.transforms.nifti_reader import FastNiftiReader

AFFINE = np.array([[-0.8, 0, 0, 100.0], [0, 0.75, 0.1, -40.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def _volume(dtype, shape=(37, 29, 11)):
    rng = np.random.default_rng(3)
    lo, hi = (0, 4000) if np.dtype(dtype).kind == "u" else (-1024, 3000)
    return rng.integers(lo, hi, size=shape).astype(dtype)


def _cases(tmp_path):
    vol = _volume(np.int16)
    scaled = nib.Nifti1Image(vol, AFFINE)
    scaled.header.set_slope_inter(0.5, -1024.0)
    big = nib.Nifti1Image(vol.astype(">i2"), AFFINE)
    return {
        "int16.nii.gz": nib.Nifti1Image(vol, AFFINE),
        "scaled.nii.gz": scaled,
        "uint16.nii.gz": nib.Nifti1Image(_volume(np.uint16), AFFINE),
        "bigendian.nii.gz": big,
        "singleton.nii.gz": nib.Nifti1Image(vol[..., None], AFFINE),
        "nifti2.nii.gz": nib.Nifti2Image(vol, AFFINE),
        "float32.nii.gz": nib.Nifti1Image(vol.astype(np.float32), AFFINE),
        "plain.nii": nib.Nifti1Image(vol, AFFINE),
    }


@pytest.mark.parametrize("name", ["int16.nii.gz", "scaled.nii.gz", "uint16.nii.gz", "bigendian.nii.gz",
                                  "singleton.nii.gz", "nifti2.nii.gz", "float32.nii.gz", "plain.nii"])
def test_same_voxels_affine_and_metadata_as_monai(tmp_path, name):
    img = _cases(tmp_path)[name]
    path = tmp_path / name
    nib.save(img, path)
    ours = LoadImage(FastNiftiReader(), image_only=True, ensure_channel_first=False, dtype=np.float32)(str(path))
    monai = LoadImage(image_only=True, ensure_channel_first=False, dtype=np.float32)(str(path))
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    assert torch.equal(ours.as_tensor(), monai.as_tensor())
    assert torch.equal(ours.affine, monai.affine)
    assert set(ours.meta) == set(monai.meta)
    for key in monai.meta:
        assert str(ours.meta[key]) == str(monai.meta[key]), key
    if name == "scaled.nii.gz":  # the scaling is applied: these are HU, not stored integers
        assert float(ours.min()) < -500


def test_a_truncated_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(_volume(np.int16), AFFINE), path)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(InputError, match="cut.nii.gz"):
        LoadCTd()({"image": str(path)})
