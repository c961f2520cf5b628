"""A minimal DiNTS (1 block, 2 depths, channel_mul 0.125), its checkpoint, a small synthetic CT and an infer task
on 32^3 windows: the backends' tests run in seconds on a CPU."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from lib.infers.segmentation import SegmentationInfer
from lib.networks.arch_code import ArchCode
from lib.networks.factory import NetworkSpec, build_dints, save_checkpoint
from lib.profiles import get_profile
from lib.runtime import backends as B
from lib.runtime.served_model import ServedModel
from lib.task import get_task

ROI = (32, 32, 32)


def tiny_arch() -> ArchCode:
    return ArchCode(
        node_a=np.ones((2, 2), dtype=np.int64),
        arch_code_a=np.ones((1, 4), dtype=np.int64),
        arch_code_c=np.array([[1, 0, 2, 0]], dtype=np.int64),
    ).validate()


def tiny_checkpoint(path, seed: int = 0, arch: ArchCode | None = None) -> str:
    torch.manual_seed(seed)
    arch = arch or tiny_arch()
    net = build_dints(arch, 0.125, 3)
    # a larger final bias spread so the random net's argmax is not a coin toss everywhere
    with torch.no_grad():
        net.stem_finals[-1].bias.copy_(torch.tensor([0.0, -0.05, -0.1]))
    save_checkpoint(net, arch, path, meta={"channel_mul": 0.125})
    return str(path)


def tiny_ct(path, shape=(64, 60, 20), spacing=(3.0, 3.0, 6.0), seed: int = 0) -> str:
    rng = np.random.RandomState(seed)
    img = np.full(shape, -1000, np.int16)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((x - shape[0] / 2) / (shape[0] * 0.42)) ** 2 + ((y - shape[1] / 2) / (shape[1] * 0.38)) ** 2 < 1
    img[np.broadcast_to(body, shape)] = -80
    organ = ((x - 30) / 8.0) ** 2 + ((y - 28) / 6.0) ** 2 + ((z - 10) / 4.0) ** 2 < 1
    img[organ] = 60
    img = (img + rng.normal(0, 15, shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(img, np.diag([*spacing, 1.0])), str(path))
    return str(path)


def tiny_task(weights, backend_options=None, background_compile=False, **kwargs) -> SegmentationInfer:
    profile = get_profile("cpu").with_overrides(channel_mul=0.125, roi_size=ROI, spacing=(4.0, 4.0, 4.0), sw_batch_size=2)
    served = ServedModel([str(weights)], NetworkSpec("dints", 3, profile.channel_mul, None),
                         backend_options or B.BackendOptions(roi_size=ROI, sw_batch_size=2), background_compile)
    return SegmentationInfer(served, get_task("pancreas"), profile, **kwargs)


def infer(task, image, **req):
    label, result = task({"image": str(image), "result_write_to_file": False, **req})
    return np.asarray(label), result


def tiny_files(folder) -> tuple[str, str]:
    """(weights, CT) of the tiny network and test CT in ``folder``."""
    return tiny_checkpoint(folder / "w.pt"), tiny_ct(folder / "ct.nii.gz")


def tiny_calibration():
    """The reduced-precision gates' calibration images (the shipped sample studies) at the tiny task's grid."""
    from lib.transforms.calibration import CalibrationImages
    from support.repo import SAMPLE_DATASTORE

    return CalibrationImages(SAMPLE_DATASTORE, get_task("pancreas"), (4.0, 4.0, 4.0), ROI)
