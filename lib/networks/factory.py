"""Build DiNTS networks from architecture codes and load checkpoints of every format we meet.

Checkpoints we read:

* the model-zoo bundle's ``model.pt``: a bare state dict (ignite saves a single object unwrapped);
* MONAI Label / ignite checkpoints: ``{"model": state_dict, ...}``;
* our own published checkpoints: ``{"model": state_dict, "arch": {...}, "meta": {...}}``. They carry
  their architecture, so weights and architecture can never drift apart after a search + retrain.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import DiNTS, TopologyInstance

from lib.networks.arch_code import ArchCode, ArchCodeError, arch_code_from_mapping, atomic_torch_save, safe_torch_load

NUM_CLASSES = 3  # background, pancreas, tumour
IN_CHANNELS = 1


class CheckpointError(ValueError):
    """A weights file that cannot be used with the requested architecture."""


def build_dints(arch: ArchCode, channel_mul: float, use_downsample: bool = True) -> DiNTS:
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
        in_channels=IN_CHANNELS,
        num_classes=NUM_CLASSES,
        use_downsample=use_downsample,
        node_a=torch.from_numpy(arch.node_a),
    )


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
) -> tuple[DiNTS, dict]:
    """Build the network a checkpoint belongs to and load it (fp16-stored weights are upcast).

    The architecture embedded in our own checkpoints wins over ``arch``; bundle checkpoints need ``arch``.
    Returns the network (eval mode, fp32, CPU) and the checkpoint's ``meta`` dict.
    """
    checkpoint = load_checkpoint(weights_path)
    meta = dict(checkpoint.get("meta", {})) if isinstance(checkpoint.get("meta"), dict) else {}
    try:
        arch = embedded_arch(checkpoint) or arch
    except ArchCodeError as exc:
        raise CheckpointError(f"{weights_path}: {exc}") from exc
    if arch is None:
        raise CheckpointError(f"{weights_path} carries no architecture and no architecture file was given")
    channel_mul = float(meta.get("channel_mul", channel_mul))
    net = build_dints(arch, channel_mul)
    state = {k: v.float() if v.is_floating_point() else v for k, v in extract_state_dict(checkpoint).items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0])
        raise CheckpointError(
            f"{weights_path} does not fit the architecture ({arch.describe()}, channel_mul {channel_mul}): {first}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path} does not fit the architecture ({arch.describe()}, channel_mul {channel_mul}): "
            f"{len(missing)} missing and {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]}"
        )
    meta.setdefault("channel_mul", channel_mul)
    return net.eval(), meta


def save_checkpoint(
    net: torch.nn.Module,
    arch: ArchCode,
    path: str | os.PathLike,
    meta: dict | None = None,
    half: bool = False,
) -> None:
    """Publish a checkpoint that carries its own architecture, atomically (never a half-written model)."""
    module = net.module if hasattr(net, "module") else net
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone() for k, v in module.state_dict().items()}
    arch_lists = {k: np.asarray(v).tolist() for k, v in arch.as_dict().items()}
    atomic_torch_save({"model": state, "arch": arch_lists, "meta": dict(meta or {})}, path)


def file_checksum(path: str | os.PathLike, length: int = 12) -> str:
    """Short sha256 of a file: the model identity shown in /info and stored with scores."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve(path: str | os.PathLike, base: str | os.PathLike) -> Path:
    """Relative paths in ``--conf`` values are relative to the app's folder, not the working directory."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path(base) / p)
