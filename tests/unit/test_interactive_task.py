"""The interactive infer task in process, on a network with fixed random weights (the mechanics, not the skill):
a click's answer is the same whatever the file's orientation, it changes the label only near the click, the
client's own label is kept elsewhere, the cache answers the next click, a new model starts afresh. Most tests run
the network click path (the default, ``--conf click_model network``); the walker path (``--conf click_model
walker``) has its own tests at the end."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from support.orientations import variants


def _run(task, path, **clicks):
    label, result = task({"image": str(path), "result_write_to_file": False, **clicks})
    return label, result["inference"]


def test_info_is_a_deepedit_model_with_its_click_labels(task):
    info = task.info()
    assert info["type"] == "deepedit" and info["labels"] == {"background": 0, "pancreas": 1, "tumor": 2}
    assert info["clicks"]["labels"] == ["background", "pancreas", "tumor"]
    assert info["model"]["path"] == "pretrained_deepedit_pancreas_cpu.pt"


def test_a_click_gives_the_same_answer_in_every_orientation_and_changes_only_near_itself(task, volume, tmp_path):
    image, affine, truth = volume
    click = tuple(int(v) for v in np.argwhere(truth == 1)[len(np.argwhere(truth == 1)) // 2])
    answers = {}
    for name, (arr, aff, index_of) in variants(image, affine).items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, aff), str(path))
        auto, stats0 = _run(task, path)
        assert stats0["cached"] is False and stats0["windows"] == 0
        after, stats1 = _run(task, path, pancreas=[list(index_of(click))])
        assert stats1["cached"] is True and stats1["windows"] == 1 and stats1["changed_clicks"] == 1
        assert after[index_of(click)] == 1  # the clicked voxel, where the client put it, is pancreas
        back = {"RAS": lambda a: a, "LPS": lambda a: a[::-1, ::-1, :], "permuted": lambda a: np.transpose(a, (1, 2, 0))}[name]
        answers[name] = (back(auto), back(after))
    for name in ("LPS", "permuted"):
        for k in range(2):
            agree = (answers[name][k] == answers["RAS"][k]).mean()
            assert agree > 0.999, (name, k, agree)
    auto, after = answers["RAS"]
    changed = np.argwhere(auto != after)
    assert len(changed) > 0  # the click did something
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))  # every change within half a window (32 voxels at 2 mm) per axis
    assert (np.abs(changed - np.asarray(click)) * spacing).max() <= 64.0 + 2 * spacing.max()


def test_the_clients_label_is_kept_away_from_the_click_and_never_reaches_another_answer(task, volume, tmp_path):
    image, affine, truth = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    mine = np.zeros(image.shape, np.uint8)
    mine[:10, :10, :5] = 2  # a hand-drawn corner far from the click
    lab_path = tmp_path / "mine.nii.gz"
    nib.save(nib.Nifti1Image(mine, affine), str(lab_path))
    click = [int(image.shape[0] - 5), int(image.shape[1] - 5), int(image.shape[2] - 3)]
    auto, _ = _run(task, path)
    assert not (auto[:10, :10, :5] == 2).all()  # the hand edit is not what the model answers there
    label, stats = task({"image": str(path), "result_write_to_file": False, "label": str(lab_path), "background": [click]})
    assert stats["inference"]["windows"] == 1
    assert (label[:10, :10, :5] == 2).all()  # the hand edit survived
    written = label != mine
    assert written.any()  # the click wrote into the client's label ...
    # ... the same as it writes into the model's own answer, which is what a request without a label gets
    again, stats = _run(task, path, background=[click])
    assert stats["windows"] == 0 and stats["changed_clicks"] == 0  # the click set is cached
    assert np.array_equal(again[written], label[written])
    assert np.array_equal(again[:10, :10, :5], auto[:10, :10, :5])  # the client's edit leaked nowhere
    task.cache.clear()
    _run(task, path)
    fresh, _ = _run(task, path, background=[click])
    assert np.array_equal(again, fresh)  # as if no label had ever been sent


def test_a_new_model_or_a_removed_click_is_answered_afresh(task, volume, tmp_path):
    image, affine, _ = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    auto, _ = _run(task, path)
    _, s1 = _run(task, path, tumor=[[30, 30, 15]], pancreas=[[10, 10, 5]])
    _, s2 = _run(task, path, tumor=[[30, 30, 15]])  # one click taken back: its window runs again without it
    assert s1["windows"] == 2 and s2["windows"] == 1 and s2["changed_clicks"] == 1 and s2["cached"]
    back, s3 = _run(task, path)  # every click taken back: the automatic answer, exactly
    assert s3["clicks"] == 0 and np.array_equal(back, auto)
    task.served.checksum = lambda path=None: "another-model"  # a new model: nothing kept from the old one
    try:
        _, s4 = _run(task, path)
        assert s4["cached"] is False
    finally:
        del task.served.checksum


def test_a_label_that_does_not_fit_the_image_is_refused(task, volume, tmp_path):
    from lib.errors import InputError

    image, affine, _ = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), affine), str(bad))
    with pytest.raises(InputError) as err:
        task({"image": str(path), "result_write_to_file": False, "label": str(bad)})
    assert err.value.status_code == 422 and "shape" in err.value.message
    odd = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.full(image.shape, 7, np.uint8), affine), str(odd))
    with pytest.raises(InputError) as err:
        task({"image": str(path), "result_write_to_file": False, "label": str(odd)})
    assert err.value.status_code == 422 and "[7]" in err.value.message and "not label ids" in err.value.message


def test_the_local_update_equals_restoring_the_whole_volume(task, volume, tmp_path):
    """Re-restoring only what changed gives the label that resampling all the updated scores gives."""
    from lib.runtime.click_cache import click_set, image_key
    from lib.transforms.restore import resample_argmax

    image, affine, truth = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    _run(task, path)
    label, stats = _run(task, path, pancreas=[[12, 25, 8]], background=[[30, 10, 12]])
    assert stats["restored_voxels"] > 0
    key = image_key(str(path), task.served.checksum())
    base = task.cache.base(key)
    state = task.cache.start(key, click_set([(1, (12, 25, 8)), (0, (30, 10, 12))]))
    assert state is not None and len(state.clicks) == 2
    full = resample_argmax(state.scores_on(base), base.model_affine, base.input_affine, base.input_shape)
    assert (label == full).mean() > 0.995


def test_connected_scope_keeps_only_changes_that_touch_the_click():
    """``click_scope connected``: of the voxels whose class a click's window changed, only the regions reaching the
    click's neighbourhood stay (grown by one voxel); a region changed far away in the same window is undone."""
    from lib.infers.network_clicks import connected_to

    changed = np.zeros((20, 20, 20), bool)
    changed[4:8, 4:8, 4:8] = True  # touches the click box below
    changed[14:17, 14:17, 14:17] = True  # elsewhere in the window
    keep = connected_to(changed, (slice(6, 9), slice(6, 9), slice(6, 9)))
    assert keep[4:8, 4:8, 4:8].all() and keep[3, 5, 5]  # the connected region, grown by one voxel
    assert not keep[13:18, 13:18, 13:18].any()
    assert not connected_to(np.zeros((5, 5, 5), bool), (slice(0, 2),) * 3).any()


def test_an_unknown_click_scope_is_refused_at_start_up(random_model_dir):
    from lib.configs.interactive import InteractiveConfig

    cfg = InteractiveConfig()
    cfg.init("deepedit_pancreas", str(random_model_dir), {"profile": "cpu", "click_scope": "everything"}, None)
    with pytest.raises(ValueError, match="click_scope must be one of connected, window"):
        cfg.infer()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def test_the_default_walker_click_finds_the_organ_the_same_in_every_orientation(walker_task, volume, tmp_path):
    """A pancreas click on a network that finds nothing useful (random weights, as a phantom-trained network on
    real CT) still gives the pancreas: the walker reads it from the image, the same through RAS, LPS and permuted
    files; taking the click back gives the automatic answer again."""
    assert walker_task.info()["config"]["click_model"] == "walker"
    image, affine, truth = volume
    inside = np.argwhere(ndimage.binary_erosion(truth == 1, iterations=1))
    click = tuple(int(v) for v in inside[len(inside) // 2])
    answers = {}
    for name, (arr, aff, index_of) in variants(image, affine).items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, aff), str(path))
        auto, _ = _run(walker_task, path)
        after, stats = _run(walker_task, path, pancreas=[list(index_of(click))])
        assert stats["walker"]["1"]["walked"] > 0
        again, _ = _run(walker_task, path)
        assert np.array_equal(again, auto)
        back = {"RAS": lambda a: a, "LPS": lambda a: a[::-1, ::-1, :], "permuted": lambda a: np.transpose(a, (1, 2, 0))}[name]
        answers[name] = back(after)
        if name == "RAS":
            auto_ras = auto
    for name in ("LPS", "permuted"):
        assert (answers[name] == answers["RAS"]).mean() > 0.999, name
    found, organ = answers["RAS"] == 1, truth == 1
    added = found & (auto_ras != 1)
    assert (added & organ).sum() >= 0.8 * added.sum()  # what the click added stops at the organ's edge


def test_robot_clicks_through_the_walker_find_the_pancreas_where_the_answer_has_none(walker_task, volume, tmp_path):
    """A phantom-trained network on real CT finds no pancreas: the client's label has none. Five clicks of the
    robot user (each at the largest error) find it (misses added by pancreas clicks, overshoots cut by background
    clicks)."""
    from lib.robot_user import dice, next_click

    image, affine, truth = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), affine), str(empty))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    _run(walker_task, path)
    label = np.zeros(image.shape, np.uint8)
    clicks: dict = {}
    names = {0: "background", 1: "pancreas", 2: "tumor"}
    for _ in range(5):
        value, point = next_click(label, truth, 1, spacing)
        clicks.setdefault(names[value], []).append(list(point))
        label, _ = walker_task({"image": str(path), "result_write_to_file": False, "label": str(empty), **clicks})
    assert dice(label, truth, 1) >= 0.8


def test_a_background_click_on_a_leak_takes_the_leak_not_the_organ():
    """The network's pancreas with a leak attached (one component): a background click in the leak removes the
    leak and keeps the organ (removing the whole component would wipe a good answer)."""
    from lib.prompts.label_edit import apply_clicks

    shape, spacing = (60, 60, 30), (1.5, 1.5, 3.0)
    grid = np.indices(shape).astype(float)
    organ = (((grid[0] - 22) * 1.5 / 15) ** 2 + ((grid[1] - 30) * 1.5 / 15) ** 2 + ((grid[2] - 15) * 3 / 15) ** 2) <= 1
    leak = (np.abs(grid[1] - 30) * 1.5 <= 4) & (np.abs(grid[2] - 15) * 3 <= 4) & (grid[0] >= 30) & (grid[0] < 52)
    rng = np.random.default_rng(0)
    hu = np.where(organ, 45.0, np.where(leak, 20.0, -90.0)) + rng.normal(0, 8, shape)
    label = (organ | leak).astype(np.uint8)
    deep = [48, 30, 15]  # well inside the leak, far from the organ
    stats = apply_clicks(label, hu, spacing, {0: [deep]})
    assert stats[1]["removed"] > 0
    assert (label[organ] == 1).mean() >= 0.95  # the organ stays
    assert (label[leak & (grid[0] >= 40)] == 0).mean() >= 0.9  # the leak's far part is gone
