"""Build the networks (DiNTS from an architecture code, or the spleen bundle's UNet) and load checkpoints of
every format we meet.

Checkpoints we read:

* the model-zoo bundle's ``model.pt``: a bare state dict (ignite saves a single object unwrapped);
* MONAI Label / ignite checkpoints: ``{"model": state_dict, ...}``;
* our own published checkpoints: ``{"model": state_dict, "arch": {...}, "meta": {...}}``. They carry
  their architecture (DiNTS) and ``meta["network"]`` / ``meta["num_classes"]``, so weights and architecture
  can never drift apart after a search + retrain, and weights of another network or task are refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import DiNTS, TopologyInstance, UNet

from lib import atomic
from lib.profiles import NETWORKS
from lib.networks.arch_code import ArchCode, ArchCodeError, arch_code_from_mapping, load_arch_code, safe_torch_load

IN_CHANNELS = 1  # the CT; an interactive (DeepEdit) network adds one guidance channel per class


class CheckpointError(ValueError):
    """A weights file that cannot be used with the requested architecture."""


def build_dints(arch: ArchCode, channel_mul: float, num_classes: int, use_downsample: bool = True,
                in_channels: int = IN_CHANNELS) -> DiNTS:
    """``TopologyInstance`` + ``DiNTS`` exactly as the model-zoo bundle builds them."""
    with contextlib.redirect_stdout(io.StringIO()):  # TopologyConstruction prints a hint on every build
        space = TopologyInstance(
            arch_code=[arch.arch_code_a.astype(np.float64), arch.arch_code_c],
            channel_mul=channel_mul,
            num_blocks=arch.num_blocks,
            num_depths=arch.num_depths,
            use_downsample=use_downsample,
            device="cpu",
        )
    return DiNTS(
        dints_space=space,
        in_channels=int(in_channels),
        num_classes=int(num_classes),
        use_downsample=use_downsample,
        node_a=torch.from_numpy(arch.node_a),
    )


SPLEEN_UNET = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2, "norm": "batch"}


def build_unet(num_classes: int, in_channels: int = IN_CHANNELS, options: dict | None = None) -> UNet:
    """A 3-D UNet; by default the model-zoo ``spleen_ct_segmentation`` network (channels 16..256, strides 2,
    2 residual units, batch norm). ``options`` are UNet arguments read from a bundle's ``network_def``."""
    kwargs = {**SPLEEN_UNET, **dict(options or {})}
    return UNet(spatial_dims=3, in_channels=int(in_channels), out_channels=int(num_classes), **kwargs)


def build_network(network: str, num_classes: int, arch: ArchCode | None = None, channel_mul: float = 0.25,
                  in_channels: int = IN_CHANNELS, options: dict | None = None) -> torch.nn.Module:
    """``dints`` (needs ``arch``) or ``unet`` (``options``: its arguments); ``in_channels`` 1 + classes for an
    interactive network."""
    if network == "unet":
        return build_unet(num_classes, in_channels, options)
    if network != "dints":
        raise CheckpointError(f"unknown network '{network}': choose one of {', '.join(NETWORKS)}")
    if arch is None:
        raise CheckpointError("a DiNTS network needs an architecture code")
    return build_dints(arch, channel_mul, num_classes, in_channels=in_channels)


@dataclass(frozen=True)
class NetworkSpec:
    """What a served or trained network is: enough to rebuild it from a weights file in any process."""

    network: str  # dints | unet
    num_classes: int  # background + the task's labels
    channel_mul: float = 0.25  # DiNTS width
    arch_file: str | None = None  # DiNTS architecture for bare (bundle) state dicts; ours embed theirs
    in_channels: int = IN_CHANNELS  # 1 + num_classes for an interactive (DeepEdit) network
    options: tuple = ()  # UNet arguments of a bundle's network_def, as sorted (name, value) pairs (hashable)

    def arch(self) -> ArchCode | None:
        if self.network == "dints" and self.arch_file and os.path.exists(self.arch_file):
            return load_arch_code(self.arch_file)
        return None

    def load(self, weights_path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
        """``load_network`` of ``weights_path`` for this network (CheckpointError / ArchCodeError if unusable)."""
        return load_network(weights_path, self.arch(), self.channel_mul, self.num_classes, self.network, self.in_channels,
                            dict(self.options))

    def cli_args(self) -> list[str]:
        args = ["--network", self.network, "--num_classes", str(int(self.num_classes)), "--channel_mul", str(self.channel_mul),
                "--in_channels", str(int(self.in_channels))]
        if self.options:
            args += ["--network_options", json.dumps(dict(self.options))]
        return args + (["--arch_file", self.arch_file] if self.arch_file else [])


def options_tuple(options: dict | None) -> tuple:
    """Network arguments as :attr:`NetworkSpec.options` (sorted pairs, lists as tuples: hashable)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(options or {}).items()))


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        checkpoint = checkpoint["model"]
    elif isinstance(checkpoint, dict) and "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError("no state dict found (expected a state dict, or a dict with a 'model' entry)")
    # DistributedDataParallel / DataParallel prefixes
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint.items()}


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        data = safe_torch_load(path)
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable weights file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def embedded_arch(checkpoint: dict) -> ArchCode | None:
    arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    if arch is None:
        return None
    return arch_code_from_mapping({k: np.asarray(v) for k, v in arch.items()}, "checkpoint architecture")


def load_network(
    weights_path: str | os.PathLike,
    arch: ArchCode | None,
    channel_mul: float,
    num_classes: int,
    network: str = "dints",
    in_channels: int = IN_CHANNELS,
    options: dict | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Build the network a checkpoint belongs to and load it (fp16-stored weights are upcast).

    ``network`` and ``num_classes`` are what the caller serves; weights recorded (``meta``) as another network
    or another number of classes are refused. The architecture embedded in our own checkpoints wins over
    ``arch``; bundle checkpoints need ``arch``. Returns the network (eval mode, fp32, CPU) and the checkpoint's
    ``meta`` dict. A bare state dict (a bundle's ``model.pt``) says nothing of its network: its keys and shapes
    must fit the one requested.
    """
    checkpoint = load_checkpoint(weights_path)
    meta = dict(checkpoint.get("meta", {})) if isinstance(checkpoint.get("meta"), dict) else {}
    stored = str(meta.get("network", network))
    if stored != network:
        raise CheckpointError(f"{weights_path} holds a '{stored}' network, not '{network}'")
    if int(meta.get("num_classes", num_classes)) != int(num_classes):
        raise CheckpointError(f"{weights_path} was trained for {meta['num_classes']} classes, this task has {num_classes}")
    if int(meta.get("in_channels", IN_CHANNELS)) != int(in_channels):
        raise CheckpointError(f"{weights_path} takes {meta.get('in_channels', IN_CHANNELS)} input channels, this model "
                              f"{in_channels} ({'an interactive' if in_channels > IN_CHANNELS else 'an automatic'} model)")
    if network == "dints":
        try:
            arch = embedded_arch(checkpoint) or arch
        except ArchCodeError as exc:
            raise CheckpointError(f"{weights_path}: {exc}") from exc
        if arch is None:
            raise CheckpointError(f"{weights_path} carries no architecture and no architecture file was given")
        channel_mul = float(meta.get("channel_mul", channel_mul))
        net = build_dints(arch, channel_mul, num_classes, in_channels=in_channels)
        shape = f"architecture ({arch.describe()}, channel_mul {channel_mul})"
    else:
        net = build_network(network, num_classes, in_channels=in_channels, options=options)
        shape = f"network ({network}, {num_classes} classes)"
    state = {k: v.float() if v.is_floating_point() else v for k, v in extract_state_dict(checkpoint).items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0])
        raise CheckpointError(f"{weights_path} does not fit the {shape}: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not fit the {shape}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]}"
        )
    if network == "dints":
        meta.setdefault("channel_mul", channel_mul)
    meta.setdefault("network", network)
    meta.setdefault("num_classes", int(num_classes))
    meta.setdefault("in_channels", int(in_channels))
    return net.eval(), meta


def save_checkpoint(
    net: torch.nn.Module,
    arch: ArchCode | None,
    path: str | os.PathLike,
    meta: dict | None = None,
    half: bool = False,
) -> None:
    """Publish a checkpoint that carries its own architecture (DiNTS; ``arch`` None for a UNet), its network
    name and class count, atomically (never a half-written model)."""
    module = net.module if hasattr(net, "module") else net
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone() for k, v in module.state_dict().items()}
    meta = dict(meta or {})
    meta.setdefault("network", "unet" if isinstance(module, UNet) else "dints")
    meta.setdefault("num_classes", output_channels(module))
    meta.setdefault("in_channels", input_channels(module))
    payload = {"model": state, "meta": meta}
    if arch is not None:
        payload["arch"] = {k: np.asarray(v).tolist() for k, v in arch.as_dict().items()}
    atomic.torch_save(payload, path)


def output_channels(net: torch.nn.Module) -> int:
    """Classes a network predicts: the output channels of its last convolution."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    if not convs:
        raise ValueError("no convolution in the network")
    return int(convs[-1].out_channels)


def input_channels(net: torch.nn.Module) -> int:
    """Channels a network takes: the input channels of its first convolution (DiNTS: of its stem)."""
    root = net.stem_down if hasattr(net, "stem_down") else net
    conv = next((m for m in root.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    if conv is None:
        raise ValueError("no convolution in the network")
    return int(conv.in_channels)


def file_checksum(path: str | os.PathLike, length: int = 12) -> str:
    """The one model checksum format: the first 12 hex digits of the file's sha256 (:func:`lib.atomic.sha256_file`).
    It is the model identity in ``/info``, in every inference's answer, in ``PUT /model``'s answer and stored with
    the scores, so all of them can be compared with each other."""
    return atomic.sha256_file(path)[:length]


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def resolve(path: str | os.PathLike, base: str | os.PathLike) -> Path:
    """Relative paths in ``--conf`` values are relative to the app's folder, not the working directory."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path(base) / p)
