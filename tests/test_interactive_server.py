"""Clicks through the real server with the 3D Slicer plugin's client, on the shipped interactive weights:
``deepedit_pancreas`` is listed as a DeepEdit model; a pancreas click on a voxel the automatic pass missed
labels it pancreas, a background click on a labelled voxel clears it, and the change stays near the click;
the same on an LPS-stored and an axis-permuted volume sent as a Slicer session (``create_session`` then
``infer(..., session_id=...)``); bad clicks get 400; training the model from the client publishes new
weights that the next request uses."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import MODEL_DIR, copy_model_dir
from server import Server
from test_clicks import _variants

from lib.data.phantom import make_phantom, save_phantom
from lib.robot_user import next_click

pytestmark = pytest.mark.server

MODEL = "deepedit_pancreas"
WEIGHTS = MODEL_DIR / "pretrained_deepedit_pancreas_cpu.pt"
HALF_WINDOW_MM = 48 * 2.0  # a click re-runs one 96^3 window at 2 mm centred on it
SEEDS = (9510, 9511, 9512)  # held out: never trained on


@pytest.fixture(scope="module")
def server(module_tmp):
    if not WEIGHTS.exists():
        pytest.fail(f"the shipped interactive weights are missing: {WEIGHTS} (scripts/train_cpu_weights.py --interactive)")
    studies = module_tmp / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    truths = {}
    for seed in SEEDS:
        ph = make_phantom(seed, preset="sample", orientation="RAS")
        labelled = seed != SEEDS[-1]
        save_phantom(ph, studies / f"case_{seed}.nii.gz", studies / "labels" / "final" / f"case_{seed}.nii.gz" if labelled else None)
        truths[f"case_{seed}"] = ph
    srv = Server(studies, conf={"model_dir": str(copy_model_dir(module_tmp / "model"))}).start()
    srv.truths = truths
    yield srv
    srv.stop()


def infer(client, image: str = "", session_id: str | None = None, **clicks):
    path, params = client.infer(MODEL, image, dict(clicks), session_id=session_id)
    params = json.loads(params) if isinstance(params, str) else params
    return np.asarray(nib.load(path).dataobj), params


def spacing(affine) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))


def missed_pancreas(auto, truth, affine):
    """The robot's pancreas click on the largest *missed* pancreas region (false positives set aside)."""
    only_misses = np.where((auto == 1) & (truth != 1), truth, auto)
    return next_click(only_misses, truth, 1, spacing(affine))


def assert_near(before, after, click, affine):
    changed = np.argwhere(before != after)
    assert len(changed) > 0
    off = np.abs(changed - np.asarray(click)) * spacing(affine)
    assert off.max() <= HALF_WINDOW_MM + 2 * spacing(affine).max(), off.max(0)


def test_info_lists_the_interactive_model(client):
    info = client.info()
    m = info["models"][MODEL]
    assert m["type"] == "deepedit" and m["labels"] == {"background": 0, "pancreas": 1, "tumor": 2}
    assert m["clicks"]["labels"] == ["background", "pancreas", "tumor"] and m["model"]["checksum"]
    assert MODEL in info["trainers"] and "dints_pancreas" in info["models"]


def test_a_pancreas_click_adds_and_a_background_click_clears(server, client):
    image = f"case_{SEEDS[-1]}"
    ph = server.truths[image]
    auto, params = infer(client, image)
    assert auto.shape == ph.image.shape and params["inference"]["clicks"] == 0
    assert params["inference"]["first_pass_refined_voxels"] > 0  # the boundary refiner ran (sample spacing: in range)
    cls, p = missed_pancreas(auto, ph.label, ph.affine)
    assert cls == 1 and auto[p] != 1, "the automatic pass should miss some pancreas on this held-out phantom"
    fixed, params = infer(client, image, pancreas=[list(p)])
    assert fixed[p] == 1 and params["inference"]["windows"] == 1 and params["inference"]["cached"]
    assert "refined_voxels" in params["inference"]  # the refiner looked at what the click re-restored (never the click)
    assert_near(auto, fixed, p, ph.affine)

    inside = np.argwhere(fixed == 1)
    q = tuple(int(v) for v in inside[len(inside) // 2])  # a voxel now labelled pancreas
    cleared, params = infer(client, image, pancreas=[list(p)], background=[list(q)])
    assert cleared[q] == 0 and cleared[p] == 1
    assert_near(fixed, cleared, q, ph.affine)


@pytest.mark.parametrize("orientation", ["LPS", "permuted"])
def test_clicks_on_a_session_volume_stored_lps_or_permuted(server, client, module_tmp, orientation):
    image = f"case_{SEEDS[-1]}"
    ph = server.truths[image]
    arr, aff, index_of = _variants(ph.image.astype(np.int16), ph.affine)[orientation]
    truth = _variants(ph.label, ph.affine)[orientation][0]
    path = module_tmp / f"local_{orientation}.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    session = client.create_session(str(path))["session_id"]
    auto, _ = infer(client, session_id=session)
    assert auto.shape == arr.shape
    cls, p = missed_pancreas(auto, truth, aff)
    assert cls == 1 and auto[p] != 1
    fixed, params = infer(client, session_id=session, pancreas=[list(p)])
    assert fixed[p] == 1 and params["inference"]["cached"]
    assert_near(auto, fixed, p, aff)


@pytest.mark.parametrize("params, words", [
    ({"liver": [[1, 2, 3]]}, "unknown label"),
    ({"pancreas": [[1.5, 2, 3]]}, "whole voxel indices"),
    ({"pancreas": [[100000, 2, 3]]}, "outside the image"),
    ({"tumor": [[1, 2]]}, "3 voxel indices"),
])
def test_bad_clicks_get_400(server, params, words):
    r = requests.post(f"{server.url}/infer/{MODEL}", params={"image": f"case_{SEEDS[0]}"},
                      data={"params": json.dumps(params)}, timeout=120)
    assert r.status_code == 400 and words in r.json()["detail"], r.text


@pytest.mark.parametrize("params, words", [
    ({"no_click_prob": 1.5}, "between 0.0 and 1.0"),
    ({"focus_weight": -1}, "between 0.0 and 100.0"),
    ({"deepest_prob": "nan"}, "between 0.0 and 1.0"),
])
def test_bad_click_simulation_parameters_get_400(server, params, words):
    def runs():
        tasks = requests.get(f"{server.url}/train/", params={"all": True}, timeout=30).json()
        return len(tasks) if isinstance(tasks, list) else int(bool(tasks))

    before = runs()
    r = requests.post(f"{server.url}/train/{MODEL}", json=params, timeout=60)
    assert r.status_code == 400 and words in r.json()["detail"], r.text
    assert runs() == before  # nothing started


def test_training_from_the_client_publishes_what_the_next_request_uses(server, client):
    before = client.info()["models"][MODEL]["model"]["checksum"]
    task = client.train_start(MODEL, {"epochs": 1, "val_interval": 1, "crop_size": 48, "val_roi_size": 96,
                                      "batch_size": 1, "publish_policy": "always", "lr": 0.001, "val_split": 0.5,
                                      "click_rounds": 1, "deepest_prob": 0.5, "focus_weight": 1.0})
    deadline = time.time() + 600
    while time.time() < deadline:
        tasks = requests.get(f"{server.url}/train/", params={"all": True}, timeout=30).json()
        t = next((t for t in (tasks if isinstance(tasks, list) else [tasks]) if t["id"] == task["id"]), None)
        if t and t["status"] in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(1.0)
    assert t and t["status"] == "DONE", server.log()[-4000:]
    stats = client.info()["train_stats"][MODEL]
    assert stats["published_file"] and stats["published_checksum"] != before, stats
    after = client.info()["models"][MODEL]["model"]["checksum"]
    assert after == stats["published_checksum"]
    _, params = infer(client, f"case_{SEEDS[-1]}", pancreas=[[80, 80, 20]])
    assert params["model"]["checksum"] == after and params["inference"]["cached"] is False
