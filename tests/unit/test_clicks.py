"""Clicks: checking, the geometry from client voxel indices to the model grid (RAS, LPS, permuted axes), the
guidance channels, the robot user, the per-image cache, and the interactive infer task's local update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.clicks import Clicks, WithGuidance, guidance_box, paint_clicks, parse_clicks, sigma_voxels, to_model_grid
from lib.errors import InputError
from lib.robot_user import clicks_to_reach, dice, next_click
from lib.runtime.click_cache import ClickState, ImageBase, StateCache, click_set
from support.orientations import variants

LABELS = {"pancreas": 1, "tumor": 2}


# ---- parsing ------------------------------------------------------------------------------------------
def test_parse_clicks_reads_the_clients_format():
    c = parse_clicks({"pancreas": [[1, 2, 3], [4, 5, 6]], "background": [[0, 0, 0]], "tumor": [], "model": "x",
                      "sw_overlap": 0.25}, LABELS, (10, 10, 10))
    assert c.points == {0: ((0.0, 0.0, 0.0),), 1: ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))}
    assert c.count == 3
    assert parse_clicks({"pancreas": [[1.0, 2.0, 3.0]]}, LABELS, (10, 10, 10)).count == 1  # whole floats are indices


@pytest.mark.parametrize("bad, words", [
    ({"liver": [[1, 2, 3]]}, "unknown label 'liver'"),
    ({"pancreas": [[1.5, 2, 3]]}, "whole voxel indices"),
    ({"pancreas": [["1", 2, 3]]}, "whole voxel indices"),
    ({"pancreas": [[True, 2, 3]]}, "whole voxel indices"),
    ({"pancreas": [[float("nan"), 2, 3]]}, "whole voxel indices"),
    ({"pancreas": [[10, 2, 3]]}, "outside the image"),
    ({"tumor": [[-1, 2, 3]]}, "outside the image"),
    ({"pancreas": [[1, 2]]}, "3 voxel indices"),
    ({"pancreas": "1,2,3"}, "list of [i, j, k]"),
    ({"pancreas": [1, 2, 3]}, "list of [i, j, k]"),
    ({"pancreas": [[1, 2, 3]] * 201}, "over the limit"),
    ({"null": [[1, 2, 3]]}, "name no label"),  # OHIF v3: points placed before a label was chosen
    ({"null": [{"x": 1, "y": 2, "z": 3}]}, "name no label"),
    ({"undefined": "1,2,3"}, "name no label"),
])
def test_bad_clicks_are_refused_with_400(bad, words):
    with pytest.raises(InputError) as err:
        parse_clicks(bad, LABELS, (10, 10, 10))
    assert err.value.status_code == 400
    assert words in err.value.message


def test_without_a_shape_everything_but_the_bounds_is_checked():
    assert parse_clicks({"pancreas": [[100, 2, 3]], "null": []}, LABELS, None).count == 1
    with pytest.raises(InputError, match="whole voxel indices"):
        parse_clicks({"pancreas": [[1.5, 2, 3]]}, LABELS, None)
    with pytest.raises(InputError, match="name no label"):
        parse_clicks({"null": [[1, 2, 3]]}, LABELS, None)


# ---- geometry -----------------------------------------------------------------------------------------
def test_clicks_reach_the_same_model_voxel_from_ras_lps_and_permuted_files(tmp_path):
    import nibabel as nib
    from monai.transforms import Compose

    from lib.transforms.preprocessing import ct_preprocessing
    from lib.task import get_task

    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 400, size=(40, 36, 24)).astype(np.int16)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-30, 12, -80)
    click = (30, 5, 17)  # off-centre on purpose: a left/right mix-up moves it far
    seen = {}
    for name, (arr, aff, index_of) in variants(image, affine).items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, aff), str(path))
        d = Compose(ct_preprocessing(get_task("pancreas"), (2.0, 2.0, 2.0), ("image",), loader="checked"))({"image": str(path)})
        ijk = index_of(click)
        assert arr[ijk] == image[click]
        c = parse_clicks({"pancreas": [list(ijk)]}, LABELS, arr.shape)
        m = to_model_grid(c, d["image_input_affine"], np.asarray(d["image"].affine), d["image"].shape[1:])
        world = np.asarray(d["image"].affine) @ np.r_[m.points[1][0], 1.0]
        seen[name] = (np.round(m.points[1][0], 6), world[:3])
        assert np.allclose(world[:3], (affine @ np.r_[click, 1.0])[:3], atol=1e-6)  # the clicked voxel's world position
    assert np.allclose(seen["RAS"][0], seen["LPS"][0]) and np.allclose(seen["RAS"][0], seen["permuted"][0])


# ---- guidance ----------------------------------------------------------------------------------------
def test_guidance_is_a_unit_bump_per_class_cut_at_three_sigma():
    sig = sigma_voxels(5.0, (2.0, 2.0, 2.0))  # 2.5 voxels
    g = paint_clicks(torch.zeros((3, 30, 30, 30)), Clicks({1: ((10.0, 10.0, 10.0),), 0: ((25.0, 25.0, 25.0),)}), sig)
    assert g[1, 10, 10, 10] == pytest.approx(1.0)
    assert g[1, 12, 10, 10] == pytest.approx(np.exp(-0.5 * (2 / 2.5) ** 2), rel=1e-5)
    assert g[1, 19, 10, 10] == 0  # beyond 3 sigma (7.5 voxels)
    assert g[0, 25, 25, 25] == pytest.approx(1.0) and g[2].sum() == 0
    box = guidance_box(Clicks({1: ((10.0, 10.0, 10.0),)}), 3, (5, 5, 5), (20, 20, 20), sig)
    assert torch.equal(box[1], g[1, 5:20, 5:20, 5:20])  # a box of the grid is the same bumps, cut out


def test_with_guidance_runs_the_automatic_mode_with_zero_channels():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x[:, :3]

    x = torch.rand(2, 1, 8, 8, 8)
    WithGuidance(Probe(), 3)(x)
    assert seen["x"].shape == (2, 4, 8, 8, 8) and torch.equal(seen["x"][:, :1], x) and seen["x"][:, 1:].abs().sum() == 0


# ---- robot user --------------------------------------------------------------------------------------
def test_robot_clicks_deep_inside_the_largest_error_region():
    truth = np.zeros((40, 40, 40), np.uint8)
    truth[5:25, 5:25, 5:25] = 1  # pancreas, 20^3
    pred = truth.copy()
    pred[5:25, 5:25, 5:12] = 0  # a missed slab of 20 x 20 x 7
    pred[30:33, 30:33, 30:33] = 1  # a false positive, 27 voxels
    cls, p = next_click(pred, truth, 1)
    assert cls == 1 and 5 <= p[0] < 25 and p[2] in (8, 9) and 12 <= p[0] <= 17 and 12 <= p[1] <= 17
    pred[5:25, 5:25, 5:12] = 1  # the miss fixed: now the false positive is the largest error
    cls, p = next_click(pred, truth, 1)
    assert cls == 0 and p == (31, 31, 31)
    assert next_click(truth, truth, 1) is None


def test_dice_and_clicks_to_reach():
    a = np.zeros((4, 4, 4), np.uint8)
    assert dice(a, a, 1) == 1.0
    b = a.copy()
    b[0, 0, :2] = 1
    a[0, 0, :1] = 1
    assert dice(a, b, 1) == pytest.approx(2 / 3)
    assert clicks_to_reach([0.5, 0.8, 0.91, 0.95], 0.9) == 2
    assert clicks_to_reach([0.5, 0.6], 0.9, cap=20) == 20


# ---- cache -------------------------------------------------------------------------------------------
def _base(mb: float) -> ImageBase:
    n = int(mb * (1 << 20) / 4)
    return ImageBase(image=torch.zeros((1, n)), model_affine=np.eye(4), input_affine=np.eye(4), input_shape=(1, 1, 1),
                     scores=torch.zeros((1, 1), dtype=torch.float16), label=np.zeros(1, np.uint8))


def _state(clicks, mb: float) -> ClickState:
    n = int(mb * (1 << 20) / 2)
    return ClickState(clicks=click_set(clicks), scores_box=(slice(0, n),),
                      scores_patch=torch.zeros((1, n), dtype=torch.float16), label_box=None, label_patch=None)


def test_cache_is_bounded_and_drops_the_least_recently_used():
    cache = StateCache(max_mb=10)
    for k in "abc":
        cache.put_base((k,), _base(4))
    assert len(cache) == 2 and cache.base(("a",)) is None  # 12 MB > 10: the oldest went
    cache.base(("b",))  # b is now the most recent
    cache.put_base(("d",), _base(4))
    assert cache.base(("b",)) is not None and cache.base(("c",)) is None
    assert not cache.put_base(("huge",), _base(20))  # larger than the whole cache: not kept, nothing else lost
    assert cache.base(("huge",)) is None and len(cache) == 2
    assert cache.total_bytes() <= 10 * (1 << 20)


def test_cache_counts_click_states_and_bases_together():
    cache = StateCache(max_mb=10)
    cache.put_base(("a",), _base(3))
    one, two = [(1, (1, 1, 1))], [(1, (1, 1, 1)), (0, (2, 2, 2))]
    assert cache.put_state(("a",), _state(one, 3)) and cache.put_state(("a",), _state(two, 3))
    assert len(cache) == 3 and cache.total_bytes() > 9 * (1 << 20)
    cache.start(("a",), click_set(one))  # the one-click state used: the two-click state is now the oldest
    assert cache.put_state(("a",), _state([(2, (3, 3, 3))], 3))  # 12 MB: something goes, never the base
    assert cache.base(("a",)) is not None and cache.click_sets(("a",)) == [click_set([(1, (1, 1, 1))]),
                                                                           click_set([(2, (3, 3, 3))])]
    assert cache.total_bytes() <= 10 * (1 << 20)
    assert not cache.put_state(("a",), _state(one + [(0, (5, 5, 5))], 8))  # base + it do not fit: the base stays
    assert cache.base(("a",)) is not None
    cache.put_base(("b",), _base(9))  # a new base pushes out a, and with it every state of a
    assert cache.base(("a",)) is None and cache.click_sets(("a",)) == [] and len(cache) == 1
    assert not cache.put_state(("gone",), _state(one, 1))  # a state without its base is not kept


def test_cache_starts_from_the_largest_cached_subset():
    cache = StateCache(max_mb=100)
    cache.put_base(("a",), _base(1))
    a, b, c, d = (1, (1, 1, 1)), (1, (2, 2, 2)), (0, (3, 3, 3)), (2, (4, 4, 4))
    for s in ([a], [a, b], [c], [d]):
        cache.put_state(("a",), _state(s, 1))
    assert cache.start(("a",), click_set([a, b, d])).clicks == click_set([a, b])  # the largest subset
    assert cache.start(("a",), click_set([a, b])).clicks == click_set([a, b])  # the set itself
    assert cache.start(("a",), click_set([b])) is None  # nothing fits: the base
    # a tie between equal-sized subsets is decided by the sets, not by which was used last
    cache.start(("a",), click_set([d]))
    assert cache.start(("a",), click_set([c, d])).clicks == click_set([c])
    cache.start(("a",), click_set([c]))
    assert cache.start(("a",), click_set([c, d])).clicks == click_set([c])


def test_a_click_state_keeps_only_what_differs_from_its_base():
    base = _base(0.01)
    base.scores, base.label = torch.rand((3, 20, 20, 20)).half(), np.zeros((30, 30, 10), np.uint8)
    scores, label = base.scores.clone(), base.label.copy()
    box_s, box_l = (slice(2, 9), slice(0, 5), slice(10, 20)), (slice(5, 8), slice(5, 9), slice(0, 3))
    scores[(slice(None), *box_s)] = 0.5
    label[box_l] = 2
    state = ClickState.of(click_set([(1, (1, 1, 1))]), scores, box_s, label, box_l)
    assert state.nbytes == 3 * 7 * 5 * 10 * 2 + 3 * 4 * 3  # the boxes, not the volumes
    assert torch.equal(state.scores_on(base), scores) and np.array_equal(state.label_on(base), label)
    state.label_on(base)[0, 0, 0] = 9  # a new array each time: the cached state stays as it was
    assert np.array_equal(state.label_on(base), label)


# ---- click simulation (training) ---------------------------------------------------------------------
def test_click_simulation_puts_clicks_in_their_class_and_sometimes_none():
    from lib.trainers.click_simulation import ClickSimulation, sample_deep_point

    label = torch.zeros((2, 1, 24, 24, 24), dtype=torch.long)
    label[:, 0, 6:18, 6:18, 6:18] = 1
    label[:, 0, 10:14, 10:14, 10:14] = 2
    images = torch.rand((2, 1, 24, 24, 24))

    class Nothing(torch.nn.Module):  # predicts background everywhere: every class voxel is an error
        def forward(self, x):
            out = torch.zeros((x.shape[0], 3, *x.shape[2:]))
            out[:, 0] = 1
            return out

    sim = ClickSimulation(3, (2.0, 2.0, 2.0), no_click_prob=0.0, max_initial=2, max_rounds=2, seed=1)
    x = sim(Nothing(), images, label)
    assert x.shape == (2, 4, 24, 24, 24) and torch.equal(x[:, :1], images)
    g = x[:, 1:]
    for c in (1, 2):  # every peak of a class's channel lies inside that class
        peaks = (g[:, c] > 0.999).nonzero()
        assert len(peaks) > 0
        assert all(int(label[b, 0, i, j, k]) == c for b, i, j, k in peaks.tolist())
    none = ClickSimulation(3, (2.0, 2.0, 2.0), no_click_prob=1.0, seed=1)(Nothing(), images, label)
    assert none[:, 1:].abs().sum() == 0  # the automatic mode: no guidance at all
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 20, 20), bool)
    mask[2:18, 2:18, 2:18] = True
    pts = np.array([sample_deep_point(mask, rng, (1, 1, 1)) for _ in range(200)])
    assert mask[tuple(pts.astype(int).T)].all() and np.abs(pts - 9.5).mean() < 4.0  # inside, drawn towards the middle


def test_focus_loss_covers_exactly_the_clicked_error_regions():
    """The extra loss of a corrective click is over the error region it was put in, and nowhere else."""
    from lib.trainers.click_simulation import ClickSimulation

    label = np.zeros((16, 16, 16), np.int64)
    label[2:8, 2:8, 2:8] = 1
    pred = np.zeros_like(label)
    pred[12:15, 12:15, 12:15] = 1  # a false positive far away: another error region
    region = ClickSimulation.error_region(label, pred, [(4.0, 4.0, 4.0)])
    assert region.sum() == 216 and region[4, 4, 4] and not region[13, 13, 13]
    assert not ClickSimulation.error_region(label, pred, []).any()

    sim = ClickSimulation(2, (2.0, 2.0, 2.0), focus_weight=2.0)
    logits = torch.zeros((1, 2, 16, 16, 16), requires_grad=True)
    labels = torch.from_numpy(label)[None, None]
    assert float(sim.focus_loss(logits, labels)) == 0.0  # no clicks simulated yet
    sim.focus = region[None]
    loss = sim.focus_loss(logits, labels)
    assert abs(float(loss) - 2.0 * np.log(2.0)) < 1e-5  # weight x CE of an undecided network
    loss.backward()
    touched = logits.grad.abs().sum(1)[0].numpy() > 0
    assert np.array_equal(touched, region)


def test_click_simulation_records_the_regions_its_error_clicks_fix():
    from lib.trainers.click_simulation import ClickSimulation

    label = torch.zeros((2, 1, 24, 24, 24), dtype=torch.long)
    label[:, 0, 6:18, 6:18, 6:18] = 1

    class Nothing(torch.nn.Module):  # background everywhere: the whole organ is one missed region
        def forward(self, x):
            out = torch.zeros((x.shape[0], 2, *x.shape[2:]))
            out[:, 0] = 1
            return out

    sim = ClickSimulation(2, (2.0, 2.0, 2.0), no_click_prob=0.0, max_rounds=1, focus_weight=1.0, seed=3)
    seen = 0
    for _ in range(6):
        sim(Nothing(), torch.rand((2, 1, 24, 24, 24)), label)
        assert sim.focus is not None and not (sim.focus & (label[:, 0].numpy() == 0)).any()
        seen += int(sim.focus.any())
        assert sim.focus.sum() in (0, 1728, 2 * 1728)  # whole regions, never a part
    assert seen > 0
    off = ClickSimulation(2, (2.0, 2.0, 2.0), no_click_prob=0.0, max_rounds=1, seed=3)
    off(Nothing(), torch.rand((2, 1, 24, 24, 24)), label)
    assert off.focus is None
