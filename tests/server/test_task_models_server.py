"""``--conf task spleen`` and ``--conf network unet`` through the real server and the Slicer plugin's client:
``/info`` lists the model with its labels; without weights inference says so (503); training from the client
publishes a model whose label comes back in the input's exact geometry with the task's values only; a second
training publishes new weights that the next inference uses."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from support.repo import copy_model_dir
from support.server import wait_train

from lib.data.make_phantoms import main as make_phantoms
from lib.networks.factory import file_checksum, load_checkpoint

pytestmark = pytest.mark.server

# tiny and fast: a 4 mm model grid (about 90 x 90 x 50 voxels per phantom), 32^3 crops, 1-2 epochs
TRAIN = {"epochs": 2, "val_interval": 1, "crop_size": 32, "val_roi_size": 64, "sw_overlap": 0.25, "batch_size": 1,
         "publish_policy": "always", "lr": 0.01}
CASES = [("spleen", "dints", "dints_spleen", {"spleen": 1}), ("pancreas", "unet", "unet_pancreas", {"pancreas": 1, "tumor": 2})]


@pytest.fixture(scope="module", params=CASES, ids=[c[2] for c in CASES])
def setup(request, module_tmp, start_server):
    task, network, name, labels = request.param
    root = module_tmp / name
    studies = root / "studies"
    assert make_phantoms(["--out", str(studies), "--count", "4", "--labelled", "3", "--seed", "1200",
                          "--task", task, "--quiet"]) == 0
    model = copy_model_dir(root / "model")  # the pancreas DiNTS weights only: this model has none yet
    srv = start_server(studies, conf={"model_dir": str(model), "task": task, "network": network, "spacing": "4",
                                      "roi_size": "64", "fast_path": "false"})
    srv.model_dir, srv.name, srv.labels, srv.task, srv.root = model, name, labels, task, root
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(setup):
    return setup


@pytest.fixture(scope="module")
def client(server):
    """The Slicer plugin's client with a download folder of its own per model."""
    from monailabel.client.client import MONAILabelClient

    tmp = server.root / "client"
    tmp.mkdir(exist_ok=True)
    return MONAILabelClient(server.url, tmpdir=str(tmp))


def train(server, client) -> str:
    task = client.train_start(server.name, dict(TRAIN))
    done = wait_train(server, task["id"], timeout=300.0)
    assert done["status"] == "DONE", server.log()[-4000:]
    stats = client.info()["train_stats"][server.name]
    assert stats["status"] == "DONE" and stats["published_file"], stats
    return stats["published_checksum"]


def infer(server, client, image_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    path, params = client.infer(server.name, image_id, {"result_extension": ".nii.gz"})
    params = json.loads(params) if isinstance(params, str) else params
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine, params


def test_info_lists_the_model_with_its_labels(server, client):
    info = client.info()
    assert server.name in info["models"] and set(info["models"]) == {server.name, f"deepedit_{server.task}", "prompt_organ", "prompt_scribbles"}
    model = info["models"][server.name]
    assert model["type"] == "segmentation" and model["labels"] == server.labels
    assert model["task"] == server.task and model["network"] == server.name.split("_")[0]
    assert info["labels"] == [*sorted(server.labels, key=server.labels.get), "background"]
    assert info["task"]["name"] == server.task and info["task"]["labels"] == server.labels
    assert info["tasks"] == {"pancreas": {"pancreas": 1, "tumor": 2}, "spleen": {"spleen": 1}}
    assert server.name in info["trainers"]
    assert ("dints_search" in info["trainers"]) == (server.name.startswith("dints"))


def test_without_weights_inference_says_so(server):
    r = requests.post(f"{server.url}/infer/{server.name}", params={"image": "phantom_003"}, timeout=120)
    assert r.status_code == 503 and "no model weights" in r.json()["detail"], r.text


def test_training_from_the_client_publishes_what_the_next_inference_uses(server, client):
    first = train(server, client)
    published = server.model_dir / f"{server.name}_cpu.pt"
    assert file_checksum(published) == first
    meta = load_checkpoint(published)["meta"]
    assert meta["network"] == server.name.split("_")[0] and meta["num_classes"] == 1 + len(server.labels)
    assert meta["labels"] == server.labels and meta["task"] == server.task
    assert client.info()["models"][server.name]["model"]["checksum"] == first

    label, affine, params = infer(server, client, "phantom_003")
    image = nib.load(server.studies / "phantom_003.nii.gz")
    assert label.shape == image.shape and label.dtype == np.uint8
    np.testing.assert_allclose(affine, image.affine, atol=1e-5)
    assert set(np.unique(label)) <= {0, *server.labels.values()}
    assert params["model"]["checksum"] == first and params["label_names"] == server.labels

    second = train(server, client)  # fine-tunes the published model and publishes again
    assert second != first
    _, _, params = infer(server, client, "phantom_003")
    assert params["model"]["checksum"] == second
