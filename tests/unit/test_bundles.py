"""Model-zoo bundles as downloaded (``--conf bundle DIR``): both seed layouts are read with MONAI's parser, load
their own ``model.pt`` and segment through the app's pipeline; a wrong or partial bundle is refused with the file
named; a bundle is only served on its own task, and studies labelled for another task are refused."""

from __future__ import annotations

import importlib.util
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from support.zoo_bundles import SMALL_UNET, write_pancreas_bundle, write_spleen_bundle

from lib.bundles.zoo import BundleError, read_bundle
from lib.configs.bundle import bundle_configs
from lib.data.phantom import make_phantom
from lib.task import TASKS, get_task, studies_label_problem


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {"spleen": write_spleen_bundle(root), "pancreas": write_pancreas_bundle(root)}


@pytest.fixture(scope="module")
def coarse_bundles(tmp_path_factory):
    """The same layouts at a 4 mm model spacing: an inference in a few seconds."""
    root = tmp_path_factory.mktemp("zoo_coarse")
    return {"spleen": write_spleen_bundle(root, pixdim=(4, 4, 4)), "pancreas": write_pancreas_bundle(root, pixdim=(4, 4, 4))}


def test_the_spleen_bundle_is_read_from_its_own_configs(bundles):
    b = read_bundle(bundles["spleen"])
    assert b.name == "spleen_ct_segmentation" and b.labels == {"spleen": 1} and b.network == "unet"
    assert b.network_options["channels"] == tuple(SMALL_UNET["channels"]) and b.network_options["num_res_units"] == 1
    assert b.spacing == (1.5, 1.5, 2.0) and b.hu_window == (-57.0, 164.0) and b.orientation == "RAS"
    assert b.roi_size == (64, 64, 64) and b.sw_overlap == 0.5 and b.sw_batch_size == 4
    # the recipe of its train.json, not the DiNTS bundle's: Adam, include_background true, pos/neg crops
    r = b.recipe
    assert (r.optimizer, r.lr, r.include_background, r.lr_step_epochs) == ("adam", 0.0002, True, 0)
    assert r.crop_size == (48, 48, 48) and r.crop_ratios == (1.0, 1.0)


def test_the_pancreas_bundle_resolves_its_expressions_without_a_gpu(bundles):
    b = read_bundle(bundles["pancreas"])  # dints_space asks for torch.device('cuda'): never evaluated
    assert b.network == "dints" and b.channel_mul == 0.25
    assert b.arch_file == str(bundles["pancreas"] / "models" / "search_code_18590.pt")
    assert b.labels == {"pancreas": 1, "pancreatic tumor": 2} and b.sw_overlap == 0.625
    r = b.recipe
    assert (r.optimizer, r.lr, r.weight_decay, r.lr_step_epochs, r.include_background) == ("sgd", 0.025, 4e-05, 80, False)
    assert r.crop_ratios == (1.0, 1.0, 1.0)  # "$[1,] * @output_classes"


@pytest.mark.parametrize("kind", ["spleen", "pancreas"])
def test_a_bundle_serves_its_model_pt_through_the_pipeline(coarse_bundles, tmp_path, kind):
    bundles = coarse_bundles
    conf = {"bundle": str(bundles[kind]), "background_compile": "false"}
    (config,) = bundle_configs(conf, str(tmp_path))
    assert conf["task"] == kind and config.name == bundles[kind].name
    # the weights are the bundle's own file, bit for bit: the served network equals one built from its state dict
    net = config.served.network("cpu")
    state = torch.load(bundles[kind] / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    task = config.infer()[config.name]
    phantom = make_phantom(1003, "sample")
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), str(path))
    label_file, params = task({"image": str(path), "result_extension": ".nii.gz"})
    out = nib.load(label_file)
    assert out.shape == phantom.image.shape and np.allclose(out.affine, phantom.affine)
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= set([0, *get_task(kind).labels.values()])
    # the pancreas bundle's "pancreatic tumor" is the app's "tumor": one label list for every client
    assert task.labels == dict(get_task(kind).labels)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed")
@pytest.mark.parametrize("kind", ["spleen", "pancreas"])
def test_a_bundle_runs_on_the_openvino_cpu_backend_with_torchs_labels(coarse_bundles, tmp_path, kind):
    """A bundle's network (the spleen bundle's UNet, the pancreas bundle's DiNTS) converts to OpenVINO like the app's
    own, and its labels are eager PyTorch's."""
    phantom = make_phantom(1003, "sample")
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image, phantom.affine), str(path))
    labels = {}
    for backend in ("torch", "openvino"):
        conf = {"bundle": str(coarse_bundles[kind]), "background_compile": "false", "backend": backend,
                "cpu_precision": "fp32"}
        (config,) = bundle_configs(conf, str(tmp_path / backend))
        label, params = config.infer()[config.name]({"image": str(path), "result_write_to_file": False})
        assert params["inference"]["backend"] == backend, params["inference"]
        labels[backend] = np.asarray(label)
    assert (labels["torch"] > 0).any()
    assert np.mean(labels["openvino"] == labels["torch"]) > 0.999


def test_the_trainer_follows_the_bundles_recipe(bundles, tmp_path):
    (config,) = bundle_configs({"bundle": str(bundles["spleen"])}, str(tmp_path))
    trainer = config.trainer()
    defaults = trainer.config()
    assert (defaults["optimizer"], defaults["lr"], defaults["include_background"]) == ("adam", 0.0002, True)
    assert config.task.crop_size == (48, 48, 48) and config.task.crop_radius_mm == 0.0
    assert trainer.trained_file == str(tmp_path / "spleen_ct_segmentation_trained.pt")  # never into the download


def _broken(bundles, tmp_path, kind):
    dst = tmp_path / bundles[kind].name
    shutil.copytree(bundles[kind], dst)
    return dst


def test_a_wrong_or_partial_bundle_is_refused_naming_the_file(bundles, tmp_path):
    b = _broken(bundles, tmp_path, "spleen")
    (b / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match=r"models/model.pt: missing"):
        bundle_configs({"bundle": str(b)}, str(tmp_path))
    # weights of another network: the start-up stops, naming model.pt
    torch.save(torch.nn.Conv3d(1, 2, 3).state_dict(), b / "models" / "model.pt")
    with pytest.raises(BundleError, match=r"model.pt does not fit"):
        bundle_configs({"bundle": str(b)}, str(tmp_path))
    (b / "configs" / "metadata.json").write_text("{}")
    with pytest.raises(BundleError, match=r"metadata.json: no network_data_format"):
        read_bundle(b)
    (b / "configs" / "metadata.json").unlink()
    with pytest.raises(BundleError, match=r"metadata.json: missing"):
        read_bundle(b)
    (b / "configs" / "inference.json").unlink()
    with pytest.raises(BundleError, match=r"no configs/inference.json or configs/inference.yaml"):
        read_bundle(b)
    with pytest.raises(BundleError, match="bundle directory not found"):
        read_bundle(tmp_path / "nowhere")


def test_an_unserved_network_or_a_missing_architecture_names_the_config(bundles, tmp_path):
    b = _broken(bundles, tmp_path, "spleen")
    cfg = json.loads((b / "configs" / "inference.json").read_text())
    cfg["network_def"]["_target_"] = "SegResNet"
    (b / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=r"inference.json: network_def is a SegResNet"):
        read_bundle(b)
    p = _broken(bundles, tmp_path, "pancreas")
    (p / "models" / "search_code_18590.pt").unlink()
    with pytest.raises(BundleError, match=r"inference.yaml: the DiNTS architecture file .*search_code_18590.pt does not exist"):
        read_bundle(p)


def test_a_bundle_is_served_on_its_own_task_only(bundles, tmp_path):
    with pytest.raises(BundleError, match="served task is 'pancreas'.*--conf task spleen"):
        bundle_configs({"bundle": str(bundles["spleen"]), "task": "pancreas"}, str(tmp_path))
    with pytest.raises(BundleError, match="segments spleen 1 .*served task is 'pancreas'"):
        bundle_configs({"bundle": f"{bundles['pancreas']},{bundles['spleen']}"}, str(tmp_path))


def test_a_bundle_of_other_labels_brings_its_own_task(bundles, tmp_path):
    b = _broken(bundles, tmp_path, "spleen")
    b = b.rename(tmp_path / "liver_ct")
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "1": "liver"}
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    conf = {"bundle": str(b)}
    try:
        (config,) = bundle_configs(conf, str(tmp_path))
        assert conf["task"] == "liver_ct" and config.task.labels == {"liver": 1} and get_task("liver_ct") == config.task
    finally:
        TASKS.pop("liver_ct", None)


def test_studies_labelled_for_another_task_are_refused(tmp_path):
    from support.repo import SAMPLE_DATASTORE

    assert studies_label_problem(SAMPLE_DATASTORE, get_task("pancreas")) is None  # MSD's "cancer" is the tumour
    assert studies_label_problem(SAMPLE_DATASTORE / "spleen", get_task("spleen")) is None
    problem = studies_label_problem(SAMPLE_DATASTORE, get_task("spleen"))
    assert problem and "labelled pancreas 1, cancer 2" in problem and "sample-datastore/spleen" in problem
    assert studies_label_problem(tmp_path, get_task("spleen")) is None  # nothing declared: nothing to compare
