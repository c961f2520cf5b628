"""Hardware profiles: the network size, sliding-window settings and model files for CPU and GPU.

``gpu`` is the model-zoo bundle ``pancreas_ct_dints_segmentation`` unchanged (channel_mul 1, 12 blocks,
4 depths, 96^3 windows at overlap 0.625; 1 mm for the pancreas task), so its ``model.pt`` loads as it is.
``cpu`` is a compact DiNTS (channel_mul 0.25, 4 blocks, 4 depths) with a lower window overlap (2 mm for the
pancreas task): one 96^3 window costs about a tenth of the bundle network's on a laptop CPU.
The model spacing itself belongs to the task (:mod:`lib.task`); the config puts the task's spacing for
the profile into ``Profile.spacing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

NETWORKS = ("dints", "unet")
NETWORK_TITLES = {"dints": "DiNTS", "unet": "UNet"}  # how descriptions and logs name them


@dataclass(frozen=True)
class Profile:
    name: str
    channel_mul: float
    spacing: tuple[float, float, float]
    roi_size: tuple[int, int, int]
    sw_batch_size: int
    sw_overlap: float
    arch_file: str  # the DiNTS architecture, relative to the model folder
    extra: dict = field(default_factory=dict)

    def with_overrides(self, **kwargs) -> "Profile":
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})

    def pretrained_file(self, network: str, task: str) -> str:
        """Shipped / user-provided weights (relative to the model folder)."""
        if self.name == "gpu" and network == "dints" and task == "pancreas":
            return "model.pt"  # the bundle's file name
        return f"pretrained_{network}_{task}_{self.name}.pt"

    def trained_file(self, network: str, task: str) -> str:
        """What training publishes (relative to the model folder); wins over the pretrained file when present."""
        return f"{network}_{task}_{self.name}.pt"


PROFILES = {
    "cpu": Profile(name="cpu", channel_mul=0.25, spacing=(2.0, 2.0, 2.0), roi_size=(96, 96, 96), sw_batch_size=2,
                   sw_overlap=0.25, arch_file="dints_pancreas_cpu_arch.pth"),
    "gpu": Profile(name="gpu", channel_mul=1.0, spacing=(1.0, 1.0, 1.0), roi_size=(96, 96, 96), sw_batch_size=4,
                   sw_overlap=0.625, arch_file="arch_code.pth"),
}


def default_profile_name() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def normalise_network(name: str | None) -> str:
    key = (name or "dints").strip().lower()
    if key not in NETWORKS:
        raise ValueError(f"unknown network '{name}': choose one of {', '.join(NETWORKS)}")
    return key


def get_profile(name: str | None) -> Profile:
    name = (name or default_profile_name()).strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}': choose one of {sorted(PROFILES)}")
    return PROFILES[name]
