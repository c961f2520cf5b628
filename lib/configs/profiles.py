"""Hardware profiles: the network size, model spacing and sliding-window settings for CPU and GPU.

``gpu`` is the model-zoo bundle ``pancreas_ct_dints_segmentation`` unchanged (channel_mul 1, 12 blocks,
4 depths, 1 mm isotropic, 96^3 windows at overlap 0.625), so its ``model.pt`` loads as it is.
``cpu`` is a compact DiNTS (channel_mul 0.25, 4 blocks, 4 depths) at 2 mm isotropic with a lower window
overlap: one 96^3 window costs about a tenth of the bundle network's on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

HU_WINDOW = (-87.0, 199.0)  # the bundle's ScaleIntensityRanged a_min / a_max, scaled to 0..1
LABELS = {"pancreas": 1, "tumor": 2}


@dataclass(frozen=True)
class Profile:
    name: str
    channel_mul: float
    spacing: tuple[float, float, float]
    roi_size: tuple[int, int, int]
    sw_batch_size: int
    sw_overlap: float
    arch_file: str  # relative to the model folder
    pretrained_file: str  # shipped / user-provided weights, relative to the model folder
    trained_file: str  # what training publishes, relative to the model folder; wins when present
    hu_window: tuple[float, float] = HU_WINDOW
    extra: dict = field(default_factory=dict)

    def with_overrides(self, **kwargs) -> "Profile":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


PROFILES = {
    "cpu": Profile(
        name="cpu",
        channel_mul=0.25,
        spacing=(2.0, 2.0, 2.0),
        roi_size=(96, 96, 96),
        sw_batch_size=2,
        sw_overlap=0.25,
        arch_file="dints_pancreas_cpu_arch.pth",
        pretrained_file="pretrained_dints_pancreas_cpu.pt",
        trained_file="dints_pancreas_cpu.pt",
    ),
    "gpu": Profile(
        name="gpu",
        channel_mul=1.0,
        spacing=(1.0, 1.0, 1.0),
        roi_size=(96, 96, 96),
        sw_batch_size=4,
        sw_overlap=0.625,
        arch_file="arch_code.pth",
        pretrained_file="model.pt",
        trained_file="dints_pancreas_gpu.pt",
    ),
}


def default_profile_name() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None) -> Profile:
    name = (name or default_profile_name()).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}': choose one of {sorted(PROFILES)}")
    return PROFILES[name]
