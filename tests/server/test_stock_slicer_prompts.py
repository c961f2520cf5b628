"""The class-agnostic prompt tasks as the stock 3D Slicer module (0.8.5) uses them, through the real server.

The module's requests are transcribed in tests/server/clients/slicer.py: the SmartEdit section's points (``prompt_organ``
picked in its model selector) and its SAM2 ROI box (``getROIPointsXYZ``), and the Scribbles section
(``onUpdateScribbles``: every segment exported, ``label_info``, ``selected_label_name``). The study is a small
synthetic CT in the orientation a DICOM-derived NIfTI has (i and j pointing to L and P), so the ROI's pairs come
out high-low. What the annotator sees: the current segment becomes the organ and the others keep what they had; a
box alone finds it; scribbles grow and cut the selected segment; a point outside the image is a readable 400.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException
from scipy import ndimage

from support.repo import copy_model_dir

from .clients.slicer import StockSlicer

SPACING = (1.5, 1.5, 2.0)
SHAPE = (48, 44, 32)
pytestmark = pytest.mark.server


def ellipsoid(centre, radii_mm) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=np.float64)
    return sum(((grid[a] - centre[a]) * SPACING[a] / radii_mm[a]) ** 2 for a in range(3)) <= 1.0


def dice(a, b) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def deepest(mask) -> list[int]:
    return [int(v) for v in np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)]


@pytest.fixture(scope="module")
def study(tmp_path_factory, start_server):
    """An organ (kidney-sized), a neighbour of the same intensity across a thin fat gap, fat, and air outside."""
    root = tmp_path_factory.mktemp("slicer_prompts")
    studies = root / "studies"
    studies.mkdir()
    organ = ellipsoid((18, 22, 16), (20.0, 22.0, 24.0))
    other = ellipsoid((40, 22, 16), (8.0, 10.0, 12.0))
    assert not (ndimage.binary_dilation(organ) & other).any()
    gap = np.flatnonzero(other[:, 22, 16]).min() - np.flatnonzero(organ[:, 22, 16]).max() - 1
    assert 1 <= gap <= 3
    hu = np.full(SHAPE, -100.0)
    hu[organ | other] = 50.0
    hu += np.random.default_rng(7).normal(0.0, 10.0, SHAPE)
    hu[:, :2] = -1000.0  # air in front of the body
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])  # LPS-like: i to the left... as from DICOM
    affine[:3, 3] = (40.0, 60.0, -120.0)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), str(studies / "case.nii.gz"))
    srv = start_server(studies, conf={"model_dir": str(copy_model_dir(root / "model"))})
    try:
        (root / "slicer").mkdir()
        yield srv, root / "slicer", organ, other
    finally:
        srv.stop()


@pytest.fixture
def slicer(study):
    """A fresh module connected to the server, the case opened with Next Sample (no auto-segmentation: the
    network is not what is tested), ``prompt_organ`` chosen in the SmartEdit model selector."""
    srv, tmpdir, _, _ = study
    s = StockSlicer(srv.url, tmpdir, auto_segment=False)
    info = s.fetch_info()
    assert info["models"]["prompt_organ"]["type"] == "deepgrow"
    assert info["models"]["prompt_scribbles"]["type"] == "scribbles"
    assert s.next_sample("first")["id"] == "case"
    s.deepgrow_model = "prompt_organ"
    return s


def assert_is_organ(mask, organ, other, min_dice=0.9):
    assert not (mask & other).any(), f"{int((mask & other).sum())} voxels of the neighbour"
    beyond = ~ndimage.binary_dilation(organ) & ~other
    assert not (mask & beyond).any(), f"{int((mask & beyond).sum())} voxels beyond the organ's edge"
    d = dice(mask, organ)
    assert d >= min_dice, f"Dice {d:.3f} (answer {int(mask.sum())} voxels, organ {int(organ.sum())})"


def test_a_positive_point_makes_the_current_segment_the_organ(slicer, study):
    _, _, organ, other = study
    s = slicer
    # something in another segment (by hand) that the prompt must leave alone
    tumour = np.zeros(SHAPE, bool)
    tumour[30:34, 5:9, 3:6] = True
    s.paint("tumor", tumour)
    click = deepest(organ)
    s.click(click, label="pancreas")
    model, params = s.last_infer
    assert model == "prompt_organ"
    assert params["foreground"] == [click] and params["background"] == [] and params["label"] == "pancreas"
    assert "roi" not in params  # no ROI placed
    assert_is_organ(s._segment("pancreas").mask, organ, other)
    assert np.array_equal(s._segment("tumor").mask, tumour)
    assert not s._segment("background").mask.any()
    # a negative point in the neighbour is sent as background, and the organ stays the organ
    s.click(deepest(other), negative=True)
    assert s.last_infer[1]["background"] == [deepest(other)] and s.last_infer[1]["foreground"] == [click]
    assert_is_organ(s._segment("pancreas").mask, organ, other)
    assert np.array_equal(s._segment("tumor").mask, tumour)


def test_an_roi_box_goes_with_the_click_and_alone_finds_the_organ(slicer, study):
    _, _, organ, other = study
    s = slicer
    idx = np.argwhere(organ)
    lo, hi = idx.min(0) - 1, idx.max(0) + 1
    s.place_roi(lo, hi)
    # Update (no point yet): the ROI alone
    s.click(None, label="tumor")
    params = s.last_infer[1]
    # the module's box: i and j of the RAS corners come out high-low on this volume (i to L, j to P)
    assert params["roi"] == [int(hi[0]), int(lo[0]), int(hi[1]), int(lo[1]), int(lo[2]), int(hi[2])]
    assert params["foreground"] == [] and params["background"] == []
    assert_is_organ(s._segment("tumor").mask, organ, other)
    assert not s._segment("pancreas").mask.any()
    # and with a point: the same organ
    s.click(deepest(organ), label="pancreas")
    assert s.last_infer[1]["roi"] == params["roi"]
    assert_is_organ(s._segment("pancreas").mask, organ, other)


def _scribble_scene(s, organ, other, with_neighbour: bool):
    """The segment as drawn: a third of the organ (and, wrongly, the neighbour); a tumour drawn elsewhere."""
    first_third = organ & (np.indices(SHAPE)[0] < np.argwhere(organ)[:, 0].min() + 10)
    s.paint("pancreas", first_third | (other if with_neighbour else False))
    tumour = np.zeros(SHAPE, bool)
    tumour[30:34, 5:9, 3:6] = True
    s.paint("tumor", tumour)
    return first_third, tumour


def test_a_foreground_scribble_grows_the_selected_segment(slicer, study):
    _, _, organ, other = study
    s = slicer
    assert s.scribble_label_items()[0] == "pancreas"
    first_third, tumour = _scribble_scene(s, organ, other, with_neighbour=False)
    c = deepest(organ & ~first_third)
    stroke = np.zeros(SHAPE, bool)
    stroke[c[0] - 4:c[0] + 5, c[1], c[2]] = True  # a stroke in the rest of the organ
    s.scribble(stroke)
    s.update_scribbles("pancreas")
    model, params = s.last_infer
    assert model == "prompt_scribbles"
    names = [seg.name for seg in s.segments]
    assert names[-2:] == ["background_scribbles", "foreground_scribbles"]
    assert params["label_info"] == [{"name": name, "id": i + 1} for i, name in enumerate(names)]
    assert params["selected_label_name"] == "pancreas" and params["roi"] == []
    sent = s.scribbles_sent  # the labelmap sent: the strokes over the segments
    assert (sent[stroke] == names.index("foreground_scribbles") + 1).all()
    assert (sent[first_third] == names.index("pancreas") + 1).all()
    assert_is_organ(s._segment("pancreas").mask, organ, other)
    assert np.array_equal(s._segment("tumor").mask, tumour)
    assert np.array_equal(s._segment("foreground_scribbles").mask, stroke)  # the strokes stay in the scene


def test_a_background_scribble_cuts_a_wrong_part_of_the_selected_segment(slicer, study):
    _, _, organ, other = study
    s = slicer
    first_third, tumour = _scribble_scene(s, organ, other, with_neighbour=True)
    c, n = deepest(organ & ~first_third), deepest(other)
    stroke = np.zeros(SHAPE, bool)
    stroke[c[0] - 4:c[0] + 5, c[1], c[2]] = True
    cut = np.zeros(SHAPE, bool)
    cut[n[0] - 3:n[0] + 4, n[1], n[2]] = True  # a stroke across the neighbour
    s.scribble(stroke)
    s.scribble(cut, foreground=False)
    s.update_scribbles("pancreas")
    names = [seg.name for seg in s.segments]
    assert (s.scribbles_sent[cut] == names.index("background_scribbles") + 1).all()
    assert_is_organ(s._segment("pancreas").mask, organ, other)
    assert np.array_equal(s._segment("tumor").mask, tumour)


def test_scribbles_inside_an_roi(slicer, study):
    _, _, organ, other = study
    s = slicer
    c = deepest(organ)
    stroke = np.zeros(SHAPE, bool)
    stroke[c[0] - 4:c[0] + 5, c[1], c[2]] = True
    s.scribble(stroke)
    idx = np.argwhere(organ)
    s.place_roi(idx.min(0) - 1, idx.max(0) + 1, which="scribbles")
    s.update_scribbles("tumor")
    assert len(s.last_infer[1]["roi"]) == 6
    assert_is_organ(s._segment("tumor").mask, organ, other)
    assert not s._segment("pancreas").mask.any()


def test_a_point_outside_the_image_is_a_readable_400(slicer, study):
    srv = study[0]
    s = slicer
    with pytest.raises(MONAILabelClientException) as err:
        s.click([SHAPE[0] + 5, 3, 3], label="pancreas")
    msg = err.value.msg
    assert "Status: 400" in msg and "outside the image" in msg and "Traceback" not in msg
    # the module keeps the point in the segment; a bad box instead: also a 400, and the server is fine after both
    with pytest.raises(MONAILabelClientException) as err:
        s._infer("prompt_organ", "case", {"foreground": [[3, 3, 3]], "roi": [1, 2, 3]})
    assert "Status: 400" in err.value.msg and "roi" in err.value.msg
    with pytest.raises(MONAILabelClientException) as err:  # scribbles without any stroke
        s.update_scribbles("pancreas")
    assert "Status: 400" in err.value.msg or "Status: 422" in err.value.msg
    assert srv.alive()
