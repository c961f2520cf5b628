"""Search, training and the retraining loop through the real ``monailabel start_server`` process, at tiny
sizes: POST /train/dints_search, then POST /train/dints_pancreas trains the searched architecture and the
next /infer uses the new weights; a label submitted with save_label starts a training run by itself
(``auto_train_after 1``) whose datalist holds it while the validation split stays; a second request while
one runs is refused; DELETE /train leaves the last good model in place. ``POST /train/`` (OHIF's *Update
Model*) trains the served models only, never the architecture search; a train request whose data cannot train
(one labelled image) is a 409 that says why, and starts nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import pytest
import requests

from support.repo import copy_model_dir
from support.server import wait_train
from support.training import TINY_SEARCH, TINY_TRAIN, blob_label, local_datastore, make_studies, segmentation_tasks

from .clients.ohif import OHIFPanel

from lib.networks.arch_code import load_arch_code
from lib.networks.factory import build_dints, file_checksum, load_checkpoint, load_network

pytestmark = pytest.mark.server

AUTO_PARAMS = dict(TINY_TRAIN, epochs=1)


@pytest.fixture(scope="module")
def server(start_server, module_tmp):
    studies = make_studies(module_tmp / "studies", count=6, labelled=4)
    model = copy_model_dir(module_tmp / "model")
    srv = start_server(studies, conf={"model_dir": str(model), "auto_train_after": "1",
                                      "auto_train_params": json.dumps(AUTO_PARAMS, separators=(",", ":"))})
    srv.model_dir = model
    yield srv
    srv.stop()


def train_stats(client, name: str) -> dict:
    return client.info()["train_stats"][name]


def model_checksum(client) -> str:
    return client.info()["models"]["dints_pancreas"]["model"]["checksum"]


def test_trainers_listed_with_documented_defaults(client):
    info = client.info()
    assert {"dints_pancreas", "dints_search"} <= set(info["trainers"])
    search_cfg = info["trainers"]["dints_search"]["config"]
    assert search_cfg["ram_cost_factor"] == 0.8 and search_cfg["num_blocks"] == 12 and search_cfg["lr_arch"] == 0.001
    assert info["trainers"]["dints_pancreas"]["config"]["lr"] == 0.025


def train_tasks(server) -> list[dict]:
    r = requests.get(f"{server.url}/train/", params={"all": True}, timeout=30)
    if r.status_code == 404:  # MONAI Label: "No Train Tasks Found"
        return []
    tasks = r.json()
    return tasks if isinstance(tasks, list) else [tasks]


def test_update_model_trains_the_served_models_only(server, client):
    """OHIF's *Update Model*: ``POST /train/`` with no model. MONAI Label queued every trainer, the 1430-epoch
    architecture search included (tiny values here for every trainer, so a regression ends quickly too)."""
    info = client.info()
    served = {m for m in info["trainers"] if m in info["models"]}
    assert served == {"dints_pancreas", "deepedit_pancreas"} and "dints_search" in info["trainers"]
    known = {t["id"] for t in train_tasks(server)}
    params = {"dints_pancreas": dict(TINY_TRAIN, epochs=1),
              "deepedit_pancreas": dict(TINY_TRAIN, epochs=1, initial_clicks=1, click_rounds=0),
              "dints_search": dict(TINY_SEARCH)}
    panel = OHIFPanel(server.url, shape=(1, 1, 1))  # the stock OHIF v3 panel's own request (tests/server/clients/ohif.py)
    panel.connect()
    panel.options = {"train": params}  # its options dialog's train section
    r = panel.update_model()
    try:
        assert r.status_code == 200, r.text
        assert set(r.json()) == served
        started = [t for t in train_tasks(server) if t["id"] not in known]
        assert sorted(t["request"]["model"] for t in started) == sorted(served)
        for task in started:
            done = wait_train(server, task["id"])
            assert done["status"] == "DONE", server.log()[-4000:]
        assert {t["request"]["model"] for t in train_tasks(server) if t["id"] not in known} == served
        stats = client.info()["train_stats"]
        assert all(stats[m].get("status") == "DONE" for m in served), {m: stats[m].get("status") for m in served}
        assert not stats.get("dints_search", {}).get("start_ts"), "the architecture search ran"
    finally:  # whatever was queued: stopped, so that a failure here does not run into the next tests
        deadline = time.time() + 60
        while time.time() < deadline and any(t["status"] in ("SUBMITTED", "RUNNING") for t in train_tasks(server)):
            requests.delete(f"{server.url}/train/", timeout=30)
            time.sleep(1.0)


def test_search_then_train_then_infer_uses_new_weights(server, client):
    before = model_checksum(client)
    task = client.train_start("dints_search", dict(TINY_SEARCH))
    done = wait_train(server, task["id"])
    assert done["status"] == "DONE", server.log()[-4000:]
    stats = train_stats(client, "dints_search")
    assert stats["status"] == "DONE"
    arch_file = Path(stats["arch_file"])
    assert arch_file.parent == server.model_dir
    assert {"node_a", "arch_code_a", "arch_code_a_max", "arch_code_c", "history"} <= set(load_checkpoint(arch_file))
    build_dints(load_arch_code(arch_file), 0.25, 3)  # loads into a TopologyInstance
    after_warmup = [h for h in stats["history"] if h["epoch"] > TINY_SEARCH["warmup_epochs"]]
    assert after_warmup and all(h["ram_cost"] > 0 and h["entropy_a"] > 0 and h["entropy_c"] > 0 for h in after_warmup)
    assert all(Path(p).exists() for p in stats["diagram"]) and stats["diagram"][0].endswith(".svg")

    task = client.train_start("dints_pancreas", dict(TINY_TRAIN))
    done = wait_train(server, task["id"])
    assert done["status"] == "DONE", server.log()[-4000:]
    assert any("epoch 1/2" in line for line in done["details"])  # per-epoch lines in GET /train
    stats = train_stats(client, "dints_pancreas")
    assert stats["arch_file"] == str(arch_file) and stats["status"] == "DONE"
    trained = server.model_dir / "dints_pancreas_cpu.pt"
    new = file_checksum(trained)
    assert stats["published_checksum"] == new != before
    assert model_checksum(client) == new
    _, params = client.infer("dints_pancreas", "case_005", {})
    params = json.loads(params) if isinstance(params, str) else params
    assert params["model"]["checksum"] == new


def test_saved_label_is_trained_on_and_split_is_stable(server, client, module_tmp):
    """save_label for an unlabelled image starts training (auto_train_after 1); its datalist holds the image."""
    before = train_stats(client, "dints_pancreas")
    assert "case_004" not in before["training_ids"] + before["validation_ids"]
    label, affine = blob_label(4)
    path = module_tmp / "case_004_label.nii.gz"
    nib.save(nib.Nifti1Image(label, affine), str(path))
    res = client.save_label("case_004", str(path), tag="final")
    assert res.get("auto_train") == "started", res
    time.sleep(2)
    done = wait_train(server)
    assert done["status"] == "DONE", server.log()[-4000:]
    after = train_stats(client, "dints_pancreas")
    assert after["start_ts"] != before["start_ts"]
    assert "case_004" in after["training_ids"]
    assert after["validation_ids"] == before["validation_ids"]
    assert set(before["training_ids"]) < set(after["training_ids"])


def test_second_request_refused_and_delete_keeps_last_good_model(server, client):
    trained = server.model_dir / client.info()["models"]["dints_pancreas"]["model"]["path"]  # the model in use
    good = file_checksum(trained)
    # a long run that validates (and so could publish) only at its end
    task = client.train_start("dints_pancreas", dict(TINY_TRAIN, epochs=500, val_interval=1000))
    deadline = time.time() + 30
    while time.time() < deadline:  # MONAI Label registers the process a moment after answering the POST
        if requests.get(f"{server.url}/train/", params={"check_if_running": True}, timeout=30).status_code == 200:
            break
        time.sleep(0.2)
    r = requests.post(f"{server.url}/train/dints_pancreas", json=dict(TINY_TRAIN), timeout=30)
    assert r.status_code == 429 and "Already Running" in r.text
    deadline = time.time() + 120
    while time.time() < deadline:  # let it get into its epochs
        st = train_stats(client, "dints_pancreas")
        if st.get("start_ts") and st.get("status") == "RUNNING" and st.get("epoch", 0) >= 1:
            break
        time.sleep(1.0)
    stopped = requests.delete(f"{server.url}/train/", timeout=30).json()
    assert stopped["status"] == "STOPPED" and stopped["id"] == task["id"]
    time.sleep(1.0)
    assert file_checksum(trained) == good
    load_network(trained, None, 0.25, 3)
    assert train_stats(client, "dints_pancreas")["status"] == "STOPPED"
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200


def test_data_that_cannot_train_is_refused_before_a_run_starts(start_server, tmp_path):
    """One labelled image: no train/validation split. Every train request says so (409, the reason in ``detail``)
    and starts no task, instead of a task that fails in the log."""
    studies = make_studies(tmp_path / "studies", count=2, labelled=1)
    srv = start_server(studies, conf={"model_dir": str(copy_model_dir(tmp_path / "model"))})
    try:
        for path in ("/train/dints_pancreas", "/train/deepedit_pancreas", "/train/dints_search", "/train/"):
            body = {"dints_pancreas": dict(TINY_TRAIN)} if path == "/train/" else dict(TINY_TRAIN)
            r = requests.post(f"{srv.url}{path}", json=body, timeout=120)
            assert r.status_code == 409, f"{path}: {r.status_code} {r.text}"
            detail = r.json()["detail"]
            assert "at least 2 images with a usable final label" in detail and "found 1 (case_000)" in detail, detail
        time.sleep(1.0)
        assert train_tasks(srv) == [], "a train task was started"
    finally:
        srv.stop()


def test_the_search_is_refused_when_the_split_leaves_it_one_training_image(tmp_path):
    """The search trains weights and architecture on two halves of the training side: two labelled images (one of
    them held out) are enough for training the model, not for the search; val_ids holding every image leaves
    nothing to train on."""
    studies = make_studies(tmp_path / "studies", count=3, labelled=2)
    _, search, train = segmentation_tasks(copy_model_dir(tmp_path / "model"))
    ds = local_datastore(studies)
    assert train.data_problem({}, ds) is None
    problem = search.data_problem({}, ds)
    assert problem and "leaves 1 of the 2 labelled images for training" in problem, problem
    problem = train.data_problem({"val_ids": "case_000,case_001"}, ds)
    assert problem and "leaves 0 of the 2" in problem, problem
    assert "no_such" in train.data_problem({"val_ids": "no_such_image"}, ds)
    assert not (Path(train.split_path)).exists(), "checking a request wrote the split"
    make_studies(tmp_path / "studies", count=3, labelled=3)
    assert search.data_problem({"val_split": 0.2}, local_datastore(studies)) is None
