"""Model-zoo bundle directories written by the tests, in the layout of the two seed bundles as downloaded.

``spleen_ct_segmentation``: ``configs/inference.json``, ``train.json``, ``metadata.json``, ``models/model.pt`` (a
bare UNet state dict, as ignite's ``CheckpointSaver`` writes one object). ``pancreas_ct_dints_segmentation``: the
same in YAML plus ``models/search_code_18590.pt`` (the architecture as numpy arrays). The configs keep the zoo's
expressions (``$@bundle_root + ...``, ``$torch.device('cuda')`` in ``dints_space``, ``@output_classes``) so they
exercise the parser as a real download does; only the sizes are small (random weights, a 4-block DiNTS, a narrow
UNet) so that a test runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from lib.networks.arch_code import load_arch_code, save_arch_code
from lib.networks.factory import build_dints, build_unet

REPO = Path(__file__).resolve().parents[2]
SMALL_UNET = {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1, "norm": "batch"}


def _metadata(name: str, channels: dict[str, str]) -> dict:
    return {"version": "0.5.1", "name": name, "monai_version": "1.4.0",
            "network_data_format": {"inputs": {"image": {"type": "image", "num_channels": 1}},
                                    "outputs": {"pred": {"type": "image", "num_channels": len(channels),
                                                         "channel_def": channels}}}}


def _pre(pixdim, a_min, a_max) -> list[dict]:
    return [{"_target_": "LoadImaged", "keys": "@image_key"}, {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": list(pixdim), "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": a_min, "a_max": a_max, "b_min": 0,
             "b_max": 1, "clip": True},
            {"_target_": "EnsureTyped", "keys": "@image_key"}]


def write_spleen_bundle(root: Path, pixdim=(1.5, 1.5, 2.0), weights: bool = True) -> Path:
    """``spleen_ct_segmentation`` (UNet, spleen 1, HU -57..164, Adam) with random weights."""
    root = Path(root) / "spleen_ct_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net_def = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, **SMALL_UNET}
    inference = {"imports": ["$import glob", "$import os"], "bundle_root": ".", "image_key": "image",
                 "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
                 "network_def": net_def, "network": "$@network_def.to(@device)",
                 "preprocessing": {"_target_": "Compose", "transforms": _pre(pixdim, -57, 164)},
                 "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "sw_batch_size": 4,
                             "overlap": 0.5}}
    train = {"imports": ["$import glob", "$import os", "$import ignite"], "bundle_root": ".",
             "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
             "network_def": net_def, "network": "$@network_def.to(@device)",
             "loss": {"_target_": "DiceCELoss", "include_background": True, "to_onehot_y": True, "softmax": True},
             "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.0002},
             "train": {"random_transforms": [{"_target_": "RandCropByPosNegLabeld", "keys": ["image", "label"],
                                              "label_key": "label", "spatial_size": [48, 48, 48], "pos": 1, "neg": 1,
                                              "num_samples": 4}],
                       "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 300}}}
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=4))
    (root / "configs" / "train.json").write_text(json.dumps(train, indent=4))
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata("Spleen CT segmentation",
                                                                         {"0": "background", "1": "spleen"})))
    if weights:
        torch.manual_seed(0)
        torch.save(build_unet(2, options=SMALL_UNET).state_dict(), root / "models" / "model.pt")
    return root


def write_pancreas_bundle(root: Path, pixdim=(2.0, 2.0, 2.0), weights: bool = True, channel_mul: float = 0.25) -> Path:
    """``pancreas_ct_dints_segmentation`` (DiNTS, pancreas 1 / tumour 2, HU -87..199, SGD 0.025) with random weights
    and the shipped 4-block CPU architecture."""
    root = Path(root) / "pancreas_ct_dints_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    arch = load_arch_code(REPO / "model" / "dints_pancreas_cpu_arch.pth")
    save_arch_code(arch, root / "models" / "search_code_18590.pt")
    space = {"_target_": "monai.networks.nets.TopologyInstance", "channel_mul": channel_mul,
             "num_blocks": arch.num_blocks, "num_depths": arch.num_depths, "use_downsample": True,
             "arch_code": ["$@arch_ckpt['arch_code_a']", "$@arch_ckpt['arch_code_c']"],
             "device": "$torch.device('cuda')"}
    net_def = {"_target_": "monai.networks.nets.DiNTS", "dints_space": "@dints_space", "in_channels": "@input_channels",
               "num_classes": "@output_classes", "use_downsample": True,
               "node_a": "$torch.from_numpy(@arch_ckpt['node_a'])"}
    common = {"imports": ["$import glob", "$import numpy", "$import os"], "input_channels": 1, "output_classes": 3,
              "arch_ckpt_path": "$@bundle_root + '/models/search_code_18590.pt'",
              "arch_ckpt": "$torch.load(@arch_ckpt_path, map_location=torch.device('cuda'))",
              "bundle_root": ".", "image_key": "image", "dints_space": space, "network_def": net_def,
              "network": "$@network_def.to(@device)"}
    inference = {**common, "preprocessing": {"_target_": "Compose", "transforms": _pre(pixdim, -87, 199)},
                 "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4,
                             "overlap": 0.625}}
    train = {**common,
             "loss": {"_target_": "DiceCELoss", "include_background": False, "to_onehot_y": True, "softmax": True},
             "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "momentum": 0.9,
                           "weight_decay": 4.0e-05, "lr": 0.025},
             "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "optimizer": "@optimizer",
                              "step_size": 80, "gamma": 0.5},
             "train": {"random_transforms": [{"_target_": "RandCropByLabelClassesd", "keys": ["@image_key"],
                                              "label_key": "label4crop", "num_classes": "@output_classes",
                                              "ratios": "$[1,] * @output_classes", "spatial_size": [96, 96, 96],
                                              "num_samples": 1}],
                       "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 400}}}
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(inference, sort_keys=False))
    (root / "configs" / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata(
        "Pancreatic tumor segmentation", {"0": "background", "1": "pancreas", "2": "pancreatic tumor"})))
    if weights:
        torch.manual_seed(0)
        torch.save(build_dints(arch, channel_mul, 3).state_dict(), root / "models" / "model.pt")
    return root
