"""A model-zoo bundle directory served as downloaded (``--conf bundle DIR``), through the real server and the 3D Slicer
plugin's client: ``/info`` lists it with its labels and recipe and switches the app to its task; it segments the
spleen sample studies with its own ``model.pt``; training from the client follows the bundle's recipe (Adam,
``include_background`` true), publishes into the model folder (the download is left as it came) and the next
inference uses what was published."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from support.repo import SAMPLE_DATASTORE, copy_model_dir
from support.server import wait_train
from support.zoo_bundles import write_spleen_bundle

from lib.atomic import sha256_file
from lib.networks.factory import file_checksum, load_checkpoint
from lib.runtime.reduced_precision import cpu_bf16_flags

pytestmark = pytest.mark.server

NAME = "spleen_ct_segmentation"
TRAIN = {"epochs": 1, "val_interval": 1, "crop_size": 32, "val_roi_size": 64, "sw_overlap": 0.25, "batch_size": 1,
         "publish_policy": "always"}


@pytest.fixture(scope="module")
def server(module_tmp, start_server):
    bundle = write_spleen_bundle(module_tmp / "downloads", pixdim=(4, 4, 4))
    studies = shutil.copytree(SAMPLE_DATASTORE / "spleen", module_tmp / "studies",
                              ignore=shutil.ignore_patterns("datastore_v2.json", ".lock"))
    # cpu_precision auto, as a user runs it: bf16 where this CPU has it and its gate passes
    srv = start_server(studies, conf={"model_dir": str(copy_model_dir(module_tmp / "model")), "bundle": str(bundle),
                                      "cpu_precision": "auto"})
    srv.bundle, srv.bundle_files = bundle, sorted(p.relative_to(bundle) for p in bundle.rglob("*"))
    srv.model_dir = module_tmp / "model"
    return srv


def test_info_lists_the_bundle_and_serves_its_task(server, client):
    info = client.info()
    model = info["models"][NAME]
    assert model["type"] == "segmentation" and model["labels"] == {"spleen": 1}
    assert info["task"]["name"] == "spleen" and info["labels"] == ["spleen", "background"]
    assert info["bundles"][NAME]["recipe"] == {"optimizer": "adam", "lr": 0.0002, "include_background": True}
    assert info["trainers"][NAME]["config"]["optimizer"] == "adam"


def test_the_bundle_segments_and_trains_with_its_own_recipe(server, client):
    shipped = sha256_file(server.bundle / "models" / "model.pt")
    path, params = client.infer(NAME, "phantom_004", {"result_extension": ".nii.gz"})
    params = json.loads(params) if isinstance(params, str) else params
    image = nib.load(server.studies / "phantom_004.nii.gz")
    label = nib.load(path)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-5)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= {0, 1}
    assert params["model"]["checksum"] == file_checksum(server.bundle / "models" / "model.pt")
    ran = params["inference"]
    if cpu_bf16_flags():  # bf16, or fp32 with the gate's reason
        assert ran["backend"] == "bf16" or ran["note"].startswith("fp32: bf16: "), ran
    else:
        assert ran["backend"] == "torch", ran
    if ran["backend"] == "bf16":  # its verdict is cached in the app's model folder
        assert list((server.model_dir / "engines" / NAME).glob("model.bf16.gate.*.json"))

    task = client.train_start(NAME, dict(TRAIN))
    done = wait_train(server, task["id"], timeout=300.0)
    assert done["status"] == "DONE", server.log()[-4000:]
    stats = client.info()["train_stats"][NAME]
    assert stats["status"] == "DONE" and stats["request"]["optimizer"] == "adam" and stats["request"]["lr"] == 0.0002
    assert stats["request"]["include_background"] is True
    published = server.model_dir / f"{NAME}_trained.pt"
    assert load_checkpoint(published)["meta"]["labels"] == {"spleen": 1}
    assert sha256_file(server.bundle / "models" / "model.pt") == shipped  # the download is left as it came
    assert sorted(p.relative_to(server.bundle) for p in server.bundle.rglob("*")) == server.bundle_files
    _, params = client.infer(NAME, "phantom_004", {"result_extension": ".nii.gz"})
    params = json.loads(params) if isinstance(params, str) else params
    assert params["model"]["checksum"] == file_checksum(published)
