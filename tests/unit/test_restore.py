"""The label comes back on the input's exact grid, whatever the input's orientation and spacing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Orientationd

from lib.metrics import dice
from lib.transforms.restore import resample_argmax
from lib.transforms.spacing import SafeSpacingd
from lib.transforms.writer import nrrd_header, write_label

RAS = (("L", "R"), ("P", "A"), ("I", "S"))


def blob_volume(shape, affine):
    """Two ellipsoids defined in world mm, so every orientation shows the same anatomy."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    label = np.zeros(len(world), dtype=np.uint8)
    label[(((world - [10, -5, 20]) / [30, 18, 14]) ** 2).sum(1) < 1] = 1
    label[(((world - [20, -5, 22]) / [8, 7, 6]) ** 2).sum(1) < 1] = 2
    return label.reshape(shape)


AFFINES = {
    "ras": np.diag([0.9, 0.9, 2.5, 1.0]),
    "lps": np.diag([-0.8, -0.8, 3.0, 1.0]),
    "permuted_oblique": np.array([[0.0, 0.0, 2.0, -40.0], [0.85, 0.1, 0.0, -30.0], [-0.1, 0.85, 0.0, -10.0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_through_model_grid(name):
    affine = AFFINES[name].copy()
    shape = (110, 100, 40) if name != "permuted_oblique" else (110, 100, 50)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) / 2)  # centre the volume on the world origin
    label = blob_volume(shape, affine)
    assert (label == 2).sum() > 100
    data = {"label": MetaTensor(torch.from_numpy(label), affine=torch.as_tensor(affine))}
    model_grid = Compose([
        EnsureChannelFirstd(keys="label", channel_dim="no_channel"),
        Orientationd(keys="label", axcodes="RAS", labels=RAS),
        SafeSpacingd(keys="label", pixdim=(2.0, 2.0, 2.0), mode="nearest"),
    ])(data)["label"]
    scores = F.one_hot(model_grid[0].long(), 3).permute(3, 0, 1, 2).float()
    restored = resample_argmax(scores, np.asarray(model_grid.affine), affine, shape, slab_voxels=50_000)
    assert restored.shape == shape and restored.dtype == np.uint8
    assert dice(restored, label, 1) > 0.85
    assert dice(restored, label, 2) > 0.75


def test_identity_grid_is_exact():
    shape = (30, 20, 10)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    label = np.random.default_rng(0).integers(0, 3, size=shape).astype(np.uint8)
    scores = F.one_hot(torch.from_numpy(label).long(), 3).permute(3, 0, 1, 2).float()
    np.testing.assert_array_equal(resample_argmax(scores, affine, affine, shape, slab_voxels=1000), label)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_written_label_keeps_shape_affine_and_names(tmp_path, ext, layout):
    """Whatever the array's memory order (the writers reorder it for speed), voxel (i, j, k) is stored as (i, j, k)."""
    import nibabel as nib
    import nrrd

    affine = AFFINES["permuted_oblique"]
    label = np.zeros((12, 10, 8), dtype=np.uint8)
    label[2:5, 3:6, 1:4] = 1
    label[3, 4, 2] = 2
    label[11, 0, 7] = 2  # a corner voxel: a transposed write would move it
    if layout == "F":
        label = np.asfortranarray(label)
    elif layout == "strided":
        wide = np.zeros((12, 20, 8), dtype=np.uint8)
        wide[:, ::2] = label
        label = wide[:, ::2]
    path = write_label(label, affine, ext, {"pancreas": 1, "tumor": 2}, directory=str(tmp_path))
    assert path.endswith(ext)
    if ext == ".nrrd":
        data, header = nrrd.read(path)
        assert header["Segment0_Name"] == "pancreas" and header["Segment1_LabelValue"] == "2"
        expected = nrrd_header(affine)
        np.testing.assert_allclose(header["space directions"], expected["space directions"])
        np.testing.assert_allclose(header["space origin"], expected["space origin"])
    else:
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(data, label)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.split("/")[-1]], "partial file left behind"


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_restore_samples_only_near_foreground_with_the_same_result(name):
    """restore_label skips input voxels whose trilinear support is all background: the label must be exactly the
    one sampling every voxel gives, with several scattered components, soft scores and a box offset."""
    from lib.transforms.restore import foreground_boxes, restore_label

    rng = np.random.default_rng(1)
    model_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    model_affine[:3, 3] = [-60, -50, -40]
    logits = torch.from_numpy(rng.normal(0, 1, (3, 60, 50, 40)).astype(np.float32))
    logits[0] += 3.0  # background wins almost everywhere ...
    for c, (x, y, z) in zip((1, 2, 1, 2), ((10, 10, 10), (40, 30, 20), (45, 8, 33), (20, 40, 5))):
        logits[c, x - 3:x + 4, y - 2:y + 3, z - 2:z + 3] += 6.0  # ... except in four scattered blobs
    scores = torch.softmax(logits, 0)
    assert len(foreground_boxes(scores)) >= 4
    affine = AFFINES[name].copy()
    shape = (120, 110, 45)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) / 2)
    offset = (3, 2, 1)
    shifted = model_affine.copy()
    shifted[:3, 3] += model_affine[:3, :3] @ np.array(offset)
    every_voxel = resample_argmax(scores, shifted, affine, shape)
    assert (every_voxel > 0).sum() > 100
    np.testing.assert_array_equal(restore_label(scores, offset, model_affine, affine, shape), every_voxel)


def test_one_dice_and_its_empty_convention():
    from lib import robot_user
    from lib.metrics import dice_per_class

    assert robot_user.dice is dice  # the robot user's curves and the reports use the same Dice
    empty, blob = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)
    blob[0, 0, :2] = 1
    assert dice(empty, empty, 1) == 1.0  # nothing to find, nothing found
    assert dice(empty, blob, 1) == 0.0 and dice(blob, blob, 1) == 1.0
    assert np.isnan(dice(empty, empty, 1, empty=float("nan")))
    per_class = dice_per_class(blob, blob, {1: "pancreas", 2: "tumor"})  # averages skip a class absent from both
    assert per_class["pancreas"] == 1.0 and np.isnan(per_class["tumor"])
    assert dice(empty > 0, blob > 0, True) == 0.0
