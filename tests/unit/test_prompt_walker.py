"""Prompt segmentation (lib/prompts): what an annotator relies on when pointing at an organ the network was never
trained on.

On small synthetic CTs (fat-like background at -100 HU with noise, organs at +50 HU): one point finds the organ
and stops at its edge (not the neighbour of the same intensity across a thin fat gap, not the background); a box
alone finds it; a negative point or a background scribble takes a wrongly included neighbour back out; scribbles
work like points; a fine anisotropic grid (which the walker coarsens) still works. DeepEdit clicks on a
network-like label (label_edit) remove a false component, add a missed organ, and keep a tumour inside the
pancreas. Requests: bad prompts are 400s with a reason. Geometry: the same volume written in RAS, LPS and with
permuted axes gives the same organ for the click at the organ's index in each file's own index space.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lib.errors import InputError
from lib.prompts.label_edit import apply_clicks
from lib.prompts.requests import parse_box, parse_point_prompts, scribble_ids
from lib.prompts.walker import Prompts, WalkerSettings, segment, working_factors

FAT, ORGAN = -100.0, 50.0


def ellipsoid(shape, centre, radii_mm, spacing) -> np.ndarray:
    """Voxels (index space) inside an ellipsoid of ``radii_mm`` around ``centre`` (voxel indices)."""
    grid = np.indices(shape, dtype=np.float64)
    return sum(((grid[a] - centre[a]) * spacing[a] / radii_mm[a]) ** 2 for a in range(3)) <= 1.0


def ct(masks, shape, noise=10.0, seed=0) -> np.ndarray:
    """Fat everywhere, organ intensity inside ``masks``, Gaussian noise."""
    hu = np.full(shape, FAT)
    for m in masks:
        hu[m] = ORGAN
    return hu + np.random.default_rng(seed).normal(0.0, noise, shape)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def centre_of(mask: np.ndarray) -> list[int]:
    """The voxel deepest inside ``mask``."""
    return [int(v) for v in np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)]


# ---- an organ and a neighbour of the same intensity across a thin fat gap ---------------------------------
SPACING = (1.5, 1.5, 1.5)
SHAPE = (40, 40, 40)


@pytest.fixture(scope="module")
def scene():
    organ = ellipsoid(SHAPE, (14, 20, 20), (12.0, 15.0, 13.5), SPACING)
    other = ellipsoid(SHAPE, (31, 20, 20), (9.0, 9.0, 9.0), SPACING)
    gap = np.flatnonzero(other[:, 20, 20]).min() - np.flatnonzero(organ[:, 20, 20]).max() - 1
    assert not (organ & other).any() and 1 <= gap <= 3  # a thin fat gap, 1.5-4.5 mm
    assert not (ndimage.binary_dilation(organ) & other).any()  # not touching
    return organ, other, ct([organ, other], SHAPE)


def assert_is_organ(mask, organ, other, min_dice=0.9):
    """The organ (Dice), stopping at its edge: none of the neighbour, no background beyond one voxel of it."""
    beyond = ~ndimage.binary_dilation(organ) & ~other
    assert not (mask & other).any(), f"{int((mask & other).sum())} voxels of the neighbour across the fat gap"
    assert not (mask & beyond).any(), f"{int((mask & beyond).sum())} background voxels beyond the organ's edge"
    d = dice(mask, organ)
    assert d >= min_dice, f"Dice {d:.3f} < {min_dice} (answer {int(mask.sum())} voxels, organ {int(organ.sum())})"


def test_one_positive_point_finds_the_organ_and_stops_at_its_edge(scene):
    organ, other, hu = scene
    mask = segment(hu, SPACING, Prompts(positive=[centre_of(organ)]))
    assert_is_organ(mask, organ, other)
    # a point off-centre (near the gap) finds the same organ
    near_gap = [int(np.flatnonzero(organ[:, 20, 20]).max()) - 3, 20, 20]
    assert organ[tuple(near_gap)]
    assert_is_organ(segment(hu, SPACING, Prompts(positive=[near_gap])), organ, other)


def test_the_neighbour_is_found_by_its_own_point(scene):
    """Class-agnostic: the same call on the other blob finds that blob, not the organ."""
    organ, other, hu = scene
    mask = segment(hu, SPACING, Prompts(positive=[centre_of(other)]))
    assert not (mask & organ).any()
    assert (mask & other).sum() >= 0.7 * other.sum()


def test_a_box_alone_finds_the_organ(scene):
    organ, other, hu = scene
    idx = np.argwhere(organ)
    lo, hi = idx.min(0) - 1, idx.max(0) + 2  # the organ's bounding box and a voxel, as drawn by hand
    box = tuple((int(a), int(b)) for a, b in zip(lo, hi))
    assert_is_organ(segment(hu, SPACING, Prompts(box=box)), organ, other)


def test_scribbles_work_like_points(scene):
    organ, other, hu = scene
    c = centre_of(organ)
    stroke = np.zeros(SHAPE, bool)
    stroke[c[0] - 5:c[0] + 5, c[1], c[2]] = True  # a line drawn across the organ's middle
    stroke[c[0], c[1] - 6:c[1] + 6, c[2]] = True
    assert (stroke <= organ).all()
    assert_is_organ(segment(hu, SPACING, Prompts(foreground=stroke)), organ, other)


def test_nothing_to_point_at_gives_nothing(scene):
    _, _, hu = scene
    assert not segment(hu, SPACING, Prompts()).any()
    with pytest.raises(InputError) as err:
        segment(hu[0], SPACING, Prompts(positive=[[1, 1, 1]]))
    assert err.value.status_code == 400


# ---- two blobs joined by a bridge: the negative prompt takes the wrong one back out --------------------------
@pytest.fixture(scope="module")
def bridged():
    shape = (48, 32, 32)
    a = ellipsoid(shape, (12, 16, 16), (15.0, 15.0, 15.0), SPACING)
    b = ellipsoid(shape, (35, 16, 16), (15.0, 15.0, 15.0), SPACING)
    bridge = np.zeros(shape, bool)
    bridge[12:36, 13:19, 13:19] = True  # a neck 9 mm wide
    hu = ct([a, b, bridge], shape, seed=1)
    a, b = a & ~bridge, b & ~bridge
    first = segment(hu, SPACING, Prompts(positive=[centre_of(a)]))
    # the premise: through the neck, one positive point takes both blobs
    assert (first & b).sum() >= 0.5 * b.sum(), f"only {(first & b).sum() / b.sum():.2f} of b: no leak to correct"
    return a, b, hu, first


def _kept_core(mask, blob) -> float:
    core = ndimage.binary_erosion(blob, iterations=2)
    return float((mask & core).sum()) / float(core.sum())


def test_a_negative_point_removes_the_wrong_blob(bridged):
    a, b, hu, first = bridged
    fixed = segment(hu, SPACING, Prompts(positive=[centre_of(a)], negative=[centre_of(b)]))
    assert (fixed & b).sum() <= 0.1 * b.sum(), f"{(fixed & b).sum() / b.sum():.2f} of the rejected blob is still in"
    assert _kept_core(fixed, a) >= 0.95
    # the answer is a function of the prompts: taking the negative point back gives the first answer again
    assert np.array_equal(segment(hu, SPACING, Prompts(positive=[centre_of(a)])), first)


def test_a_background_scribble_removes_the_wrong_blob(bridged):
    a, b, hu, _ = bridged
    fg, bg = np.zeros(a.shape, bool), np.zeros(a.shape, bool)
    ca, cb = centre_of(a), centre_of(b)
    fg[ca[0] - 4:ca[0] + 4, ca[1], ca[2]] = True
    bg[cb[0] - 4:cb[0] + 4, cb[1], cb[2]] = True
    fixed = segment(hu, SPACING, Prompts(foreground=fg, background=bg))
    assert (fixed & b).sum() <= 0.1 * b.sum()
    assert _kept_core(fixed, a) >= 0.95


# ---- a fine anisotropic grid ----------------------------------------------------------------------------------
def test_fine_anisotropic_grid_is_coarsened_and_still_finds_the_organ():
    spacing = (0.7, 0.7, 2.5)
    shape = (100, 90, 24)
    organ = ellipsoid(shape, (40, 45, 12), (16.0, 20.0, 22.0), spacing)
    other = ellipsoid(shape, (82, 45, 12), (10.0, 10.0, 15.0), spacing)
    assert not (ndimage.binary_dilation(organ, iterations=3) & other).any()
    hu = ct([organ, other], shape, noise=20.0, seed=2)  # thin slices are noisier
    assert working_factors(shape, spacing, WalkerSettings())[:2] != (1, 1)  # the walker works on a coarser grid
    mask = segment(hu, spacing, Prompts(positive=[centre_of(organ)]))
    assert not (mask & other).any()
    assert not (mask & ~ndimage.binary_dilation(organ, iterations=2)).any()  # in-plane 1.4 mm beyond the edge at most
    d = dice(mask, organ)
    assert d >= 0.85, f"Dice {d:.3f}"


# ---- DeepEdit clicks on a network-like label ------------------------------------------------------------------
def test_a_background_click_removes_a_false_component_and_only_it(scene):
    organ, other, hu = scene
    label = np.zeros(SHAPE, np.uint8)
    label[ndimage.binary_erosion(organ)] = 1  # the network's organ, a little small
    label[ndimage.binary_erosion(other, iterations=2)] = 1  # and a false positive far from it
    before = label.copy()
    apply_clicks(label, hu, SPACING, {0: [centre_of(other)]})
    assert not label[other].any(), "the clicked false component is not all gone"
    assert np.array_equal(label[~other], before[~other]), "something besides the clicked component changed"


def test_a_click_in_a_missed_organ_adds_it_up_to_its_edge(scene):
    organ, other, hu = scene
    label = np.zeros(SHAPE, np.uint8)
    label[ndimage.binary_erosion(other)] = 1  # the network found the neighbour, missed the organ
    apply_clicks(label, hu, SPACING, {1: [centre_of(organ)]})
    found = label == 1
    assert_is_organ(found & ~other, organ, other)
    assert (found & other).sum() >= 0.9 * ndimage.binary_erosion(other).sum(), "what was right is lost"


def test_a_tumour_inside_the_organ_is_not_overwritten_by_the_organ():
    shape, spacing = SHAPE, SPACING
    organ = ellipsoid(shape, (20, 20, 20), (18.0, 18.0, 16.0), spacing)
    tumour = ellipsoid(shape, (24, 20, 20), (5.0, 5.0, 5.0), spacing)  # same intensity: only the label tells
    hu = ct([organ], shape, seed=3)
    label = np.zeros(shape, np.uint8)
    label[organ & (np.indices(shape)[0] < 20)] = 1  # the network found half the organ
    label[tumour] = 2
    click = [14, 20, 20]
    assert organ[tuple(click)] and not tumour[tuple(click)]
    apply_clicks(label, hu, spacing, {1: [click]})
    assert (label[tumour] == 2).all(), "the organ's walk overwrote the tumour"
    assert dice(label > 0, organ) >= 0.9  # the missing half was added around the tumour


# ---- the requests of the stock clients --------------------------------------------------------------------
IMAGE_SHAPE = (30, 20, 10)


def refused(request: dict) -> str:
    with pytest.raises(InputError) as err:
        parse_point_prompts(request, IMAGE_SHAPE)
    assert err.value.status_code == 400
    return err.value.message


def test_bad_prompts_are_400_with_their_reason():
    assert "outside the image" in refused({"foreground": [[30, 5, 5]]})
    assert "outside the image" in refused({"foreground": [[3, 5, 5]], "background": [[-1, 5, 5]]})
    refused({"foreground": [[3, 5]]})
    refused({"foreground": [3, 5, 5]})
    refused({"foreground": [[3.5, 5, 5]]})
    refused({"foreground": "[[3, 5, 5]]"})
    refused({"foreground": [["a", 5, 5]]})
    assert "roi" in refused({"foreground": [[3, 5, 5]], "roi": [1, 2, 3, 4]})
    refused({"roi": [1, 2, 3, 4, 5, 6, 7]})
    assert "no prompt" in refused({})
    assert "no prompt" in refused({"foreground": [], "background": [[3, 5, 5]]})  # only "not this"
    assert "outside the image" in refused({"roi": [40, 50, 1, 5, 1, 5]})
    with pytest.raises(InputError) as err:
        scribble_ids({"label_info": [{"name": "pancreas", "id": 1}]})
    assert err.value.status_code == 400


def test_roi_pairs_in_either_order_are_the_same_box():
    """Slicer's ROI of an LPS volume: the RAS corners' i and j come out high-low."""
    assert parse_box([12, 3, 15, 4, 2, 7], IMAGE_SHAPE) == parse_box([3, 12, 4, 15, 2, 7], IMAGE_SHAPE)
    box = parse_box([12, 3, 15, 4, 2, 7], IMAGE_SHAPE)
    assert box == ((3, 13), (4, 16), (2, 8))  # both ends inside the box
    assert parse_point_prompts({"roi": [12, 3, 15, 4, 2, 7]}, IMAGE_SHAPE).box == box
    assert parse_box([], IMAGE_SHAPE) is None and parse_box(None, IMAGE_SHAPE) is None


# ---- geometry: the click's index in the file's own index space -------------------------------------------------
GEO_SPACING = (1.2, 1.6, 2.0)
GEO_SHAPE = (44, 36, 30)


@pytest.fixture(scope="module")
def geometry_files(tmp_path_factory):
    """The same scene (off-centre organ, a neighbour) as NIfTI in RAS, LPS, and with permuted axes."""
    folder = tmp_path_factory.mktemp("geometry")
    organ = ellipsoid(GEO_SHAPE, (16, 15, 13), (14.0, 16.0, 15.0), GEO_SPACING)
    other = ellipsoid(GEO_SHAPE, (37, 22, 16), (7.0, 8.0, 9.0), GEO_SPACING)
    hu = ct([organ, other], GEO_SHAPE, seed=4)
    hu[:, -3:] = -1000.0  # air beyond the body (the loader checks that the file is CT)
    hu = hu.astype(np.int16)
    ras = np.diag([*GEO_SPACING, 1.0])
    ras[:3, 3] = (-30.0, 12.0, -80.0)
    files = {}

    def save(name, data, affine, truth):
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        files[name] = (str(path), truth, affine)

    save("ras", hu, ras, organ)
    # LPS: i and j reversed; voxel (n-1-i, m-1-j, k) is where voxel (i, j, k) of the RAS file was
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = GEO_SHAPE[0] - 1, GEO_SHAPE[1] - 1
    save("lps", hu[::-1, ::-1].copy(), ras @ flip, organ[::-1, ::-1].copy())
    # permuted: file axis 0 is RAS axis 2, file axis 1 is RAS axis 0, file axis 2 is RAS axis 1
    order = (2, 0, 1)
    perm = np.zeros((4, 4))
    for file_axis, ras_axis in enumerate(order):
        perm[ras_axis, file_axis] = 1.0
    perm[3, 3] = 1.0
    save("permuted", hu.transpose(order).copy(), ras @ perm, organ.transpose(order).copy())
    for path, _, affine in files.values():
        assert np.allclose(nib.load(path).affine, affine)
    return files, organ, ras


@pytest.mark.parametrize("orientation", ["ras", "lps", "permuted"])
def test_prompt_organ_clicks_in_the_files_own_index_space(geometry_files, orientation):
    from lib.infers.prompt import prompt_tasks

    files, organ_ras, ras_affine = geometry_files
    path, truth, affine = files[orientation]
    task = prompt_tasks()["prompt_organ"]
    out, result = task({"image": path, "foreground": [centre_of(truth)], "label": "organ"})
    assert result["label_names"] == {"organ": 1}
    img = nib.load(out)
    assert img.shape == truth.shape and np.allclose(img.affine, affine, atol=1e-4)
    mask = np.asarray(img.dataobj) == 1
    # the same organ in the world: the answer mapped back to RAS is the answer on the RAS file
    canonical = nib.as_closest_canonical(img)
    assert np.allclose(canonical.affine, ras_affine, atol=1e-4)
    in_ras = np.asarray(canonical.dataobj) == 1
    ras_answer, _ = task({"image": files["ras"][0], "foreground": [centre_of(organ_ras)], "label": "organ",
                          "result_write_to_file": False})
    assert dice(in_ras, ras_answer.astype(bool)) >= 0.98, f"{orientation}: another answer than on the RAS file"
    d = dice(in_ras, organ_ras)
    assert d >= 0.9, f"{orientation}: Dice {d:.3f} in RAS"
    d = dice(mask, truth)
    assert d >= 0.9, f"{orientation}: Dice {d:.3f} in the file's own grid"


def test_prompt_organ_refuses_a_point_outside_the_image_before_reading_it(geometry_files):
    from lib.infers.prompt import prompt_tasks

    files, _, _ = geometry_files
    path = files["permuted"][0]
    task = prompt_tasks()["prompt_organ"]
    with pytest.raises(InputError) as err:  # [40, 5, 5] is inside the RAS file's shape, not this one's
        task({"image": path, "foreground": [[40, 5, 5]], "label": "organ"})
    assert err.value.status_code == 400 and "outside the image" in err.value.message
