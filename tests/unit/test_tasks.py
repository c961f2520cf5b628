"""The task definition as data (issue 11): the tasks' labels, one preprocessing for inference and training,
the spleen label of the phantoms, the seed bundle's UNet, and the multi-process schedule scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from lib.data.phantom import make_phantom, save_phantom, task_label
from lib.evaluation import make_infer_task
from lib.networks.factory import CheckpointError, build_unet, count_parameters, load_network, save_checkpoint
from lib.errors import InputError
from lib.params import parse_request, request_flag, truthy
from lib.task import TASKS, get_task
from lib.trainers.tasks import SEARCH_PARAMS, TRAIN_PARAMS, scale_schedule
from lib.transforms.train import preprocessing


def test_tasks_are_the_seed_bundles():
    pancreas, spleen = get_task("pancreas"), get_task("spleen")
    assert pancreas.labels == {"pancreas": 1, "tumor": 2} and pancreas.num_classes == 3
    assert pancreas.hu_window == (-87.0, 199.0) and pancreas.spacing["gpu"] == (1.0, 1.0, 1.0)
    assert spleen.labels == {"spleen": 1} and spleen.num_classes == 2
    assert spleen.hu_window == (-57.0, 164.0) and spleen.spacing["gpu"] == (1.5, 1.5, 2.0)
    assert get_task(None) is pancreas and get_task(" Spleen ") is spleen
    with pytest.raises(ValueError, match="unknown task 'liver'"):
        get_task("liver")


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_infer_and_train_preprocessing_give_the_same_tensor(task_name, tmp_path):
    """What the network is trained on is what it sees at inference, for an LPS-stored volume."""
    task = get_task(task_name)
    ph = make_phantom(1234, "sample", orientation="LPS")
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    save_phantom(ph, image, label, task=task_name)
    infer_task = make_infer_task(tmp_path / "model", {"task": task_name, "background_compile": "false"})
    served = Compose(infer_task.pre_transforms())({"image": str(image)})["image"]
    trained = Compose(preprocessing(task, infer_task.profile.spacing, (1, 1, 1), with_crop_masks=False))(
        {"image": str(image), "label": str(label)})
    assert served.shape == trained["image"].shape and served.shape[0] == 1
    assert torch.equal(served.as_tensor().float(), trained["image"].as_tensor().float())
    np.testing.assert_allclose(np.asarray(served.affine), np.asarray(trained["image"].affine), atol=1e-6)
    assert trained["label"].shape == served.shape
    assert float(served.min()) >= 0.0 and float(served.max()) <= 1.0
    assert set(np.unique(np.asarray(trained["label"]))) <= {0, *task.labels.values()}


def test_float32_resampling_is_monais_float64_one_to_rounding_and_labels_are_unchanged(tmp_path):
    """The image is resampled in float32 for speed: the network's input must be MONAI's default (float64) result
    to far below one HU, on an oblique, anisotropic volume, and the label resampled exactly as before."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd

    from lib.task import AXIS_LABELS

    task = get_task("pancreas")
    ph = make_phantom(77, "sample", orientation="LPS")
    image, label = tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz"
    save_phantom(ph, image, label)
    spacing = (2.0, 2.0, 2.0)
    ours = Compose(preprocessing(task, spacing, (1, 1, 1), with_crop_masks=False))({"image": str(image), "label": str(label)})
    keys = ["image", "label"]
    monai = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys, channel_dim="no_channel"),
                     Orientationd(keys, axcodes=task.orientation, labels=AXIS_LABELS),
                     Spacingd(keys, pixdim=spacing, mode=("bilinear", "nearest")),
                     ScaleIntensityRanged("image", *task.hu_window, 0.0, 1.0, clip=True)])(
        {"image": str(image), "label": str(label)})
    assert ours["image"].shape == monai["image"].shape
    hu_range = task.hu_window[1] - task.hu_window[0]
    assert float((ours["image"] - monai["image"]).abs().max()) * hu_range < 0.1  # HU
    assert torch.equal(ours["label"].as_tensor().float(), monai["label"].as_tensor().float())


def test_phantom_spleen_label_is_the_spleen():
    ph = make_phantom(1000, "sample")
    spleen = task_label(ph, "spleen")
    assert spleen.dtype == np.uint8 and set(np.unique(spleen)) == {0, 1}
    assert not np.logical_and(spleen > 0, ph.label > 0).any()  # another organ than the pancreas
    voxel_ml = float(np.prod(ph.info["spacing"])) / 1000.0
    assert 60 < spleen.sum() * voxel_ml < 400 and ph.info["spleen_ml"] == pytest.approx(spleen.sum() * voxel_ml, abs=0.01)
    hu = ph.image[spleen > 0]
    assert 40 < np.median(hu) < 200  # enhancing soft tissue (the phantoms are a venous phase)
    # the spleen lies on the patient's left (x grows towards the patient's left in RAS ... here: its world side)
    world = ph.affine[:3, :3] @ np.argwhere(spleen > 0).mean(0) + ph.affine[:3, 3]
    pancreas = ph.affine[:3, :3] @ np.argwhere(ph.label > 0).mean(0) + ph.affine[:3, 3]
    assert world[0] < pancreas[0]  # RAS: more negative x is further to the patient's left


def test_unet_is_the_spleen_bundles_and_checkpoints_say_what_they_hold(tmp_path):
    net = build_unet(2)
    assert 4.5e6 < count_parameters(net) < 5.0e6  # channels 16..256, 2 residual units
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    path = tmp_path / "unet.pt"
    save_checkpoint(net, None, path, meta={"task": "spleen"})
    loaded, meta = load_network(path, None, 0.25, 2, "unet")
    assert meta["network"] == "unet" and meta["num_classes"] == 2
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    with pytest.raises(CheckpointError, match="holds a 'unet' network, not 'dints'"):
        load_network(path, None, 0.25, 2, "dints")
    with pytest.raises(CheckpointError, match="trained for 2 classes, this task has 3"):
        load_network(path, None, 0.25, 3, "unet")


def test_loss_leaves_the_background_out_and_multi_process_scales_the_schedule():
    assert parse_request(TRAIN_PARAMS, {})["include_background"] is False
    assert parse_request(SEARCH_PARAMS, {})["include_background"] is False
    cfg = parse_request(TRAIN_PARAMS, {})
    one = scale_schedule({**cfg, "world_size": 1})
    assert (one["epochs"], one["lr_step_epochs"], one["val_interval"]) == (400, 80, 10)
    four = scale_schedule({**cfg, "world_size": 4})
    assert (four["epochs"], four["lr_step_epochs"], four["val_interval"]) == (1600, 320, 40)
    off = scale_schedule({**cfg, "world_size": 4, "scale_schedule": False})
    assert off["epochs"] == 400


def test_click_simulation_parameters_are_range_checked():
    from lib.trainers.tasks import INTERACTIVE_PARAMS

    assert parse_request(INTERACTIVE_PARAMS, {"no_click_prob": "1", "focus_weight": "0.5"})["focus_weight"] == 0.5
    for bad in ({"no_click_prob": 1.01}, {"deepest_prob": -0.1}, {"focus_weight": "nan"}, {"click_rounds": 21}):
        with pytest.raises(ValueError, match="must be between"):
            parse_request(INTERACTIVE_PARAMS, bad)


def test_one_boolean_parser_refuses_what_is_not_a_boolean():
    for word in ("1", "true", "True", " yes ", "on", "y", "t", True, 1):
        assert truthy(word) is True, word
    for word in ("0", "false", "FALSE", "no", "off", "n", "f", False, 0, None):
        assert truthy(word) is False, word
    for bad in ("flase", "", "2", 2, [], "maybe"):
        with pytest.raises(ValueError, match="fast_path must be a boolean"):
            truthy(bad, "fast_path")
    assert request_flag({"force": "yes"}, "force") is True and request_flag({}, "force") is False
    assert request_flag({"fast_path": " "}, "fast_path", True) is True  # a blank field is the default, as in parse_value
    with pytest.raises(InputError, match="force must be a boolean") as exc:
        request_flag({"force": "sure"}, "force")
    assert exc.value.status_code == 400
    with pytest.raises(ValueError, match="'amp': cannot read"):  # a train task's bool parameter
        parse_request(TRAIN_PARAMS, {"amp": "maybe"})


def test_tta_score_of_a_task_without_a_lesion_is_the_organ_term():
    from lib.scoring.tta import TTAOptions, uncertainty_from_samples

    torch.manual_seed(0)
    organ = torch.zeros(1, 16, 16, 16)
    organ[:, 4:10, 4:10, 4:10] = 1.0
    p_fg = (0.6 + 0.3 * torch.rand(3, 1, 16, 16, 16)) * organ  # three samples, unsure inside the organ
    probs = torch.cat([1 - p_fg, p_fg], dim=1)  # (T, background + spleen, x, y, z)
    res = uncertainty_from_samples(probs, TTAOptions(tumor_weight=1.0))
    assert res["tumor"] == 0.0 and res["score"] == res["pancreas"] > 0.1
    assert not res["no_pancreas_found"]
