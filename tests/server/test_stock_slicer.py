"""What the stock 3D Slicer module (0.8.5) saves is stored as what was drawn, and what a label's values mean is
decided by one rule (lib/datastore/label_check.py).

The module makes one segment per /info label in /info's order and sends each kept segment's position among all
of them as ``idx``, while its labelmap export numbers the kept segments 1..n; with ``background`` listed first
(pancreas idx 2, tumor idx 3, file values 1 and 2) trusting ``idx`` stored the tumour as pancreas. Through the
real server with the module's requests (tests/server/clients/slicer.py): Next Sample, auto-segmentation, a DeepEdit click,
a tumour painted inside the pancreas and some pancreas, Save as a .nii.gz or .nrrd labelmap and as a .seg.nrrd (4-D
where segments overlap, 3-D in one layer), with /info listing background first and last. In-process: the rule's
422s (ambiguous, inconsistent, unknown segment), the 4-D merge, and ``--conf background_position``."""

from __future__ import annotations

import importlib.util

import nibabel as nib
import nrrd
import numpy as np
import pytest

from support.repo import REPO_ROOT, copy_model_dir

from .clients.slicer import Segment, StockSlicer, write_seg_nrrd

from lib.data.phantom import make_phantom, save_phantom
from lib.data.seeds import HELD_OUT_SEED_BASE
from lib.datastore.label_check import check_label
from lib.datastore.local import AnnotationDatastore
from lib.errors import InputError

LABELS = {"pancreas": 1, "tumor": 2}
SEED = HELD_OUT_SEED_BASE + 20  # 9520: a phantom with a tumour in the pancreas


# ---- the rule, in-process --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A small image and the paths for labels on its grid."""
    folder = tmp_path_factory.mktemp("grid")
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 30], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((16, 14, 8), np.int16), affine), str(folder / "image.nii.gz"))
    return folder, affine


def labelmap(grid, values: dict[int, tuple], name="label.nii.gz") -> str:
    """A NIfTI labelmap on the grid: ``{value: (slice, slice, slice)}``."""
    folder, affine = grid
    data = np.zeros((16, 14, 8), np.uint8)
    for value, region in values.items():
        data[region] = value
    path = folder / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def check(grid, path, label_info=None):
    return check_label(str(path), str(grid[0] / "image.nii.gz"), LABELS, label_info)


def refused(grid, path, label_info=None) -> str:
    with pytest.raises(InputError) as err:
        check(grid, path, label_info)
    assert err.value.status_code == 422
    return err.value.message


PANCREAS = (slice(2, 9), slice(2, 9), slice(1, 6))
TUMOUR = (slice(4, 6), slice(4, 6), slice(2, 4))
SLICER_BACKGROUND_FIRST = [{"name": "pancreas", "idx": 2}, {"name": "tumor", "idx": 3}]


def test_slicer_numbering_and_client_numbering_both_map_by_name(grid):
    # 3D Slicer with /info ["background", "pancreas", "tumor"]: idx 2 and 3, the export wrote 1 and 2
    path = labelmap(grid, {1: PANCREAS, 2: TUMOUR})
    checked = check(grid, path, [{"name": "background", "idx": 1}, *SLICER_BACKGROUND_FIRST])
    assert checked.data is None or np.array_equal(checked.voxels(), nib.load(path).get_fdata().astype(np.uint8))
    assert checked.values[2] == 8 and checked.values[1] == 7 * 7 * 5 - 8
    # a client whose idx are the file's values, in another order than the model's
    swapped = labelmap(grid, {2: PANCREAS, 1: TUMOUR}, "swapped.nii.gz")
    checked = check(grid, swapped, [{"name": "tumor", "idx": 1}, {"name": "pancreas", "idx": 2}])
    assert (checked.voxels()[TUMOUR] == 2).all() and checked.values[1] == 7 * 7 * 5 - 8
    # idx are the values of a tumour-only file that position would read as pancreas
    tumour = labelmap(grid, {2: TUMOUR}, "tumour.nii.gz")
    assert check(grid, tumour, [{"name": "pancreas", "idx": 1}, {"name": "tumor", "idx": 2}]).values == {0: 16 * 14 * 8 - 8, 2: 8}
    assert check(grid, tumour, [{"name": "tumor", "idx": 2}]).values[2] == 8


def test_ambiguous_label_info_is_refused_with_its_reason(grid):
    """A tumour-only label from 3D Slicer with background listed first: by idx value 2 is pancreas, by position
    tumour. Which one it is cannot be known from the request."""
    path = labelmap(grid, {2: TUMOUR}, "tumour_only.nii.gz")
    detail = refused(grid, path, SLICER_BACKGROUND_FIRST)
    assert "ambiguous" in detail and "value 2 is 'pancreas' by idx but 'tumor' by position" in detail


def test_label_info_that_fits_neither_numbering_is_refused(grid):
    path = labelmap(grid, {1: PANCREAS, 3: TUMOUR}, "three.nii.gz")
    detail = refused(grid, path, [{"name": "pancreas", "idx": 1}, {"name": "tumor", "idx": 2}])
    assert "does not fit" in detail and "[1, 3]" in detail
    detail = refused(grid, labelmap(grid, {1: PANCREAS}, "one.nii.gz"),
                     [{"name": "pancreas", "idx": 1}, {"name": "tumor", "idx": 1}])
    assert "idx 1 to both 'pancreas' and 'tumor'" in detail


def test_unknown_segment_with_voxels_is_refused_by_name(grid):
    path = labelmap(grid, {1: PANCREAS, 2: TUMOUR}, "unknown.nii.gz")
    detail = refused(grid, path, [{"name": "pancreas", "idx": 1}, {"name": "Segment_2", "idx": 2}])
    assert "'Segment_2' (value 2, 8 voxels)" in detail
    # an empty segment of another name is no problem
    only = labelmap(grid, {1: PANCREAS}, "pancreas_only.nii.gz")
    assert check(grid, only, [{"name": "pancreas", "idx": 1}, {"name": "Segment_2", "idx": 2}]).values[1] == 7 * 7 * 5


def seg_nrrd(grid, path, layers: np.ndarray, segments: list[tuple[str, int, int]]) -> str:
    """A Slicer segmentation file by hand: ``layers`` (L x i x j x k; one layer: 3-D), (name, value, layer)."""
    _, affine = grid
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    header = {"type": "unsigned char", "space": "left-posterior-superior", "encoding": "gzip",
              "space origin": lps[:, 3], "Segmentation_MasterRepresentation": "Binary labelmap"}
    if len(layers) == 1:
        data = layers[0]
        header.update({"dimension": 3, "kinds": ["domain"] * 3, "space directions": lps[:, :3].T})
    else:
        data = layers
        header.update({"dimension": 4, "kinds": ["list", "domain", "domain", "domain"],
                       "space directions": np.vstack([np.full(3, np.nan), lps[:, :3].T])})
    for n, (name, value, layer) in enumerate(segments):
        header.update({f"Segment{n}_ID": f"Segment_{n + 1}", f"Segment{n}_Name": name,
                       f"Segment{n}_LabelValue": str(value), f"Segment{n}_Layer": str(layer)})
    nrrd.write(str(path), data, header)
    return str(path)


def overlapping(grid, name="overlap.seg.nrrd", pancreas_value=2, tumour_value=1) -> str:
    """Background (painted) and pancreas in layer 0, the tumour over the pancreas in layer 1."""
    layers = np.zeros((2, 16, 14, 8), np.uint8)
    layers[0][PANCREAS] = pancreas_value
    layers[0][0:2, 0:2, 0:2] = 1  # the background segment, painted: no label
    layers[1][TUMOUR] = tumour_value
    return seg_nrrd(grid, grid[0] / name, layers,
                    [("background", 1, 0), ("Pancreas", pancreas_value, 0), ("tumor", tumour_value, 1)])


def test_overlapping_seg_nrrd_is_merged_tumour_over_pancreas(grid):
    """Named by its own segment table (case-insensitive), whatever the file is called; overlaps: higher id wins."""
    for name in ("overlap.seg.nrrd", "label.nrrd"):
        checked = check(grid, overlapping(grid, name))
        expected = np.zeros((16, 14, 8), np.uint8)
        expected[PANCREAS] = 1
        expected[TUMOUR] = 2
        assert np.array_equal(checked.voxels(), expected)
        assert checked.values == {0: expected.size - 7 * 7 * 5, 1: 7 * 7 * 5 - 8, 2: 8}
    # the tumour in the first layer, the pancreas over it in the second: still the tumour
    layers = np.zeros((2, 16, 14, 8), np.uint8)
    layers[0][TUMOUR] = 1
    layers[1][PANCREAS] = 1
    flipped = seg_nrrd(grid, grid[0] / "flipped.seg.nrrd", layers, [("tumor", 1, 0), ("pancreas", 1, 1)])
    assert np.array_equal(check(grid, flipped).voxels(), expected)
    # the module's label_info (positions among all its segments) agrees with the file
    assert check(grid, overlapping(grid), SLICER_BACKGROUND_FIRST).values[2] == 8


def test_seg_nrrd_contradicted_or_with_unknown_segments_is_refused(grid):
    path = overlapping(grid)
    assert "has no segment of that name" in refused(grid, path, [{"name": "pancreas", "idx": 2}, {"name": "spleen", "idx": 3}])
    assert "'tumor' idx 2" in refused(grid, path, [{"name": "tumor", "idx": 2}, {"name": "pancreas", "idx": 3}])
    layers = np.zeros((1, 16, 14, 8), np.uint8)
    layers[0][PANCREAS] = 1
    layers[0][TUMOUR] = 2
    unknown = seg_nrrd(grid, grid[0] / "unknown.seg.nrrd", layers, [("pancreas", 1, 0), ("Segment_2", 2, 0), ("liver", 3, 0)])
    detail = refused(grid, unknown)
    assert "'Segment_2' (8 voxels)" in detail and "liver" not in detail  # the empty one is no problem
    stray = seg_nrrd(grid, grid[0] / "stray.seg.nrrd", layers, [("pancreas", 1, 0)])
    assert "value(s) [2] in layer 0 that no segment" in refused(grid, stray)


def test_a_seg_nrrd_is_stored_as_a_plain_labelmap(grid, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    image = np.zeros((16, 14, 8), np.int16)
    nib.save(nib.Nifti1Image(image, grid[1]), str(studies / "case.nii.gz"))
    store = AnnotationDatastore(str(studies), labels=LABELS, extensions=("*.nii.gz", "*.nii", "*.nrrd"), auto_reload=False)
    store.save_label("case", overlapping(grid), "final", {"label_info": SLICER_BACKGROUND_FIRST})
    data, header = nrrd.read(str(studies / "labels" / "final" / "case.nrrd"))
    assert data.shape == (16, 14, 8) and not [k for k in header if str(k).startswith("Segment")]
    assert (data[TUMOUR] == 2).all() and int((data == 1).sum()) == 7 * 7 * 5 - 8 and int((data > 0).sum()) == 7 * 7 * 5
    assert np.allclose(nrrd_affine(header), grid[1])


def test_training_skips_a_seg_nrrd_put_into_the_folder_by_hand(grid, tmp_path):
    """A .seg.nrrd copied into labels/final (not submitted) passes the check, but its raw values are its own segment
    table's, not the model's ids: training must leave it out rather than read them as ids."""
    import shutil

    from lib.trainers.datalist import labelled_datalist

    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for case in ("by_hand", "submitted"):
        nib.save(nib.Nifti1Image(np.zeros((16, 14, 8), np.int16), grid[1]), str(studies / f"{case}.nii.gz"))
    shutil.copy(overlapping(grid), studies / "labels" / "final" / "by_hand.nrrd")
    store = AnnotationDatastore(str(studies), labels=LABELS, extensions=("*.nii.gz", "*.nii", "*.nrrd"), auto_reload=False)
    store.save_label("submitted", overlapping(grid), "final", {"label_info": SLICER_BACKGROUND_FIRST})
    items, skipped = labelled_datalist(store, LABELS)
    assert [d["id"] for d in items] == ["submitted"]
    assert [d["id"] for d in skipped] == ["by_hand"] and "segmentation" in skipped[0]["reason"]


def nrrd_affine(header) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(header["space directions"], dtype=float).T
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(header["space origin"], dtype=float)
    return affine


def test_emulated_seg_nrrd_writer_layers(grid, tmp_path):
    """The emulator's file: one shared layer without overlaps, a second layer for an overlapping segment."""
    shape = (16, 14, 8)
    pancreas, tumour = np.zeros(shape, bool), np.zeros(shape, bool)
    pancreas[PANCREAS], tumour[TUMOUR] = True, True
    segments = [Segment("background", np.zeros(shape, bool)), Segment("pancreas", pancreas), Segment("tumor", tumour)]
    write_seg_nrrd(str(tmp_path / "a.seg.nrrd"), segments, grid[1])
    data, header = nrrd.read(str(tmp_path / "a.seg.nrrd"))
    assert data.ndim == 4 and header["Segment2_Layer"] == "1" and header["Segment1_LabelValue"] == "2"
    segments[1].mask = pancreas & ~tumour
    write_seg_nrrd(str(tmp_path / "b.seg.nrrd"), segments, grid[1])
    data, header = nrrd.read(str(tmp_path / "b.seg.nrrd"))
    assert data.shape == shape and {header[f"Segment{n}_Layer"] for n in range(3)} == {"0"}
    assert (data[TUMOUR] == 3).all() and np.allclose(nrrd_affine(header), grid[1])


# ---- /info's label order ------------------------------------------------------------------------------------
def app_module():
    spec = importlib.util.spec_from_file_location("dints_app_main", REPO_ROOT / "apps" / "dints_pancreas" / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_background_position_orders_info_labels():
    main = app_module()
    models = {"dints_pancreas": {"labels": {"pancreas": 1, "tumor": 2}},
              "deepedit_pancreas": {"labels": {"background": 0, "pancreas": 1, "tumor": 2}}}
    assert main.label_list(models, LABELS, main.background_position({})) == ["pancreas", "tumor", "background"]
    assert main.label_list(models, LABELS, "first") == ["background", "pancreas", "tumor"]
    assert main.background_position({"background_position": "First"}) == "first"
    with pytest.raises(ValueError, match="background_position must be 'last' or 'first', not 'middle'"):
        main.background_position({"background_position": "middle"})


# ---- the stock module through the real server ---------------------------------------------------------------
@pytest.fixture(scope="module", params=["first", "last"], ids=["background-first", "background-last"])
def slicer(request, tmp_path_factory, start_server):
    """A server with /info listing background first or last, and a Slicer that took the one unlabelled image with
    Next Sample (auto-segmented), clicked the pancreas with DeepEdit, painted a tumour inside the pancreas
    (overlapping segments allowed) and some more pancreas."""
    root = tmp_path_factory.mktemp(f"slicer_{request.param}")
    studies = root / "studies"
    studies.mkdir()
    phantom = make_phantom(SEED, preset="sample")
    assert {1, 2} <= set(np.unique(phantom.label).tolist())
    save_phantom(phantom, studies / "case.nii.gz")
    srv = start_server(studies, conf={"model_dir": str(copy_model_dir(root / "model")), "background_position": request.param})
    try:
        (root / "slicer").mkdir()
        s = StockSlicer(srv.url, root / "slicer", allow_overlap=True)
        info = s.fetch_info()
        assert info["labels"][0 if request.param == "first" else -1] == "background"
        sample = s.next_sample("first")
        assert sample["id"] == "case"
        assert [seg.name for seg in s.segments] == info["labels"]
        assert s.last_infer[0] == "dints_pancreas" and s._segment("pancreas").mask.any()  # auto-segmented
        from scipy.ndimage import distance_transform_edt

        truth = phantom.label
        click = np.array(np.unravel_index(np.argmax(distance_transform_edt(truth == 1)), truth.shape))  # deep inside
        s.click(click, label="pancreas")
        assert s.last_infer[0] == "deepedit_pancreas" and s.last_infer[1]["pancreas"] == [click.tolist()]
        assert s._segment("pancreas").mask[tuple(click)]
        # the edit: a tumour drawn inside the pancreas, and pancreas drawn where the answer has none
        pancreas = s._segment("pancreas").mask
        centre = np.unravel_index(np.argmax(distance_transform_edt(pancreas)), pancreas.shape)  # its thickest part
        tumour_region = np.zeros(truth.shape, bool)
        tumour_region[tuple(slice(c - r, c + r + 1) for c, r in zip(centre, (3, 3, 1)))] = True
        tumour_region &= pancreas
        s.paint("tumor", tumour_region)
        labelled = pancreas | s._segment("tumor").mask
        extra = np.zeros(truth.shape, bool)
        free = np.argwhere(~labelled)
        lo = free[len(free) // 3]
        extra[tuple(slice(c, c + 3) for c in lo)] = True
        extra &= ~labelled
        s.paint("pancreas", extra)
        assert tumour_region.sum() > 20 and extra.sum() > 5
        s.painted = {"tumor": tumour_region, "pancreas": extra}
        s.server = srv
        yield s
    finally:
        srv.stop()


def stored_label(s: StockSlicer) -> np.ndarray:
    path = s._client().download_label(s.current_sample["id"], "final")
    if path.endswith(".nrrd"):
        data, header = nrrd.read(path)
        assert data.ndim == 3 and not [k for k in header if str(k).startswith("Segment")]
        assert np.allclose(nrrd_affine(header), s.volume.affine, atol=1e-3)
        return data
    img = nib.load(path)
    assert np.allclose(img.affine, s.volume.affine, atol=1e-3)
    return np.asarray(img.dataobj)


@pytest.mark.server
@pytest.mark.parametrize("export", ["labelmap.nii.gz", "labelmap.nrrd", "seg.nrrd-overlapping", "seg.nrrd-one-layer"])
def test_stock_slicer_save_stores_what_was_drawn(slicer, export):
    s = slicer
    s.file_ext = {"labelmap.nii.gz": ".nii.gz", "labelmap.nrrd": ".nrrd"}.get(export, ".seg.nrrd")
    if export == "seg.nrrd-one-layer":  # the pancreas erased under the tumour: nothing overlaps (runs last)
        s.erase("pancreas", s._segment("tumor").mask)
    pancreas, tumour = s._segment("pancreas").mask, s._segment("tumor").mask
    result = s.save_label()
    assert result["image"] == "case"
    sent = s.saved_file
    if export.startswith("seg.nrrd"):
        assert nrrd.read_header(sent)["dimension"] == (4 if export.endswith("overlapping") else 3)
    background_first = s.info["labels"][0] == "background"
    assert s.saved_label_info == ([{"name": "pancreas", "idx": 2}, {"name": "tumor", "idx": 3}] if background_first
                                  else [{"name": "pancreas", "idx": 1}, {"name": "tumor", "idx": 2}])
    stored = stored_label(s)
    expected = np.where(tumour, 2, np.where(pancreas, 1, 0))
    assert np.array_equal(stored, expected), {v: int((stored == v).sum()) for v in (0, 1, 2)}
    assert (stored[s.painted["tumor"]] == 2).all() and (stored[s.painted["pancreas"]] == 1).all()
