"""DiNTS architecture codes: safe loading of every published format, validation, atomic saving.

A DiNTS architecture is three small integer matrices (He et al., CVPR 2021):

* ``node_a``       (num_blocks + 1, num_depths): which nodes of the searched grid are active;
* ``arch_code_a``  (num_blocks, 3 * num_depths - 2): which paths between resolutions are active;
* ``arch_code_c``  (num_blocks, 3 * num_depths - 2): the cell operation (0..4) of every path.

MONAI's tutorial and the model-zoo bundle store them as numpy arrays under those keys, Auto3DSeg's
DiNTS template as ``code_a`` / ``code_c`` / ``node_a``. Since torch 2.6 ``torch.load`` refuses numpy
arrays under ``weights_only=True``; loading with ``weights_only=False`` would execute arbitrary pickled
code, so we allow-list exactly the numpy globals an array needs and nothing else.
"""

from __future__ import annotations

import codecs
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib import atomic

NUM_CELL_OPS = 5  # skip, 3x3x3, 3x3x1, 3x1x3, 1x3x3 (monai.networks.nets.dints.Cell.OPS3D)


class ArchCodeError(ValueError):
    """An architecture file that cannot be used, with a message a user can act on."""


def _numpy_safe_globals() -> list:
    """The numpy callables an ndarray pickle needs, under both numpy 1 and numpy 2 module names."""
    reconstruct = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    rec = reconstruct._reconstruct
    allowed: list[Any] = [
        (rec, "numpy.core.multiarray._reconstruct"),
        (rec, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        codecs.encode,
    ]
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"):
        allowed.append(type(np.dtype(name)))
    return allowed


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` that also accepts plain numpy arrays."""
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _as_int_array(value: Any, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - defensive
        raise ArchCodeError(f"'{key}' is not an array: {exc}") from exc
    if arr.ndim != 2:
        raise ArchCodeError(f"'{key}' must be a 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.allclose(arr, np.round(arr)):
        raise ArchCodeError(f"'{key}' must hold integers")
    return np.round(arr).astype(np.int64)


@dataclass
class ArchCode:
    """A decoded DiNTS architecture."""

    node_a: np.ndarray
    arch_code_a: np.ndarray
    arch_code_c: np.ndarray
    arch_code_a_max: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return int(self.arch_code_a.shape[0])

    @property
    def num_depths(self) -> int:
        return int(self.node_a.shape[1])

    def validate(self) -> "ArchCode":
        """Check that the matrices agree with each other, so network construction cannot fail later."""
        nb, nd = self.num_blocks, self.num_depths
        n_paths = 3 * nd - 2
        if self.node_a.shape != (nb + 1, nd):
            raise ArchCodeError(f"node_a has shape {self.node_a.shape}, expected {(nb + 1, nd)} for {nb} blocks")
        for key in ("arch_code_a", "arch_code_c"):
            arr = getattr(self, key)
            if arr.shape != (nb, n_paths):
                raise ArchCodeError(f"{key} has shape {arr.shape}, expected {(nb, n_paths)} for {nd} depths")
        if not np.isin(self.node_a, (0, 1)).all() or not np.isin(self.arch_code_a, (0, 1)).all():
            raise ArchCodeError("node_a and arch_code_a must be 0/1 matrices")
        if self.arch_code_c.min() < 0 or self.arch_code_c.max() >= NUM_CELL_OPS:
            raise ArchCodeError(f"arch_code_c holds operation indices 0..{NUM_CELL_OPS - 1}")
        if not self.node_a[-1].any():
            raise ArchCodeError("node_a's last row has no active node: the decoder would have no input")
        return self

    def as_dict(self) -> dict[str, np.ndarray]:
        out = {"node_a": self.node_a, "arch_code_a": self.arch_code_a.astype(np.float64), "arch_code_c": self.arch_code_c}
        if self.arch_code_a_max is not None:
            out["arch_code_a_max"] = self.arch_code_a_max
        return out

    def describe(self) -> str:
        return f"{self.num_blocks} blocks x {self.num_depths} depths, {int(self.arch_code_a.sum())} active paths"


_KEY_ALIASES = {
    "node_a": ("node_a",),
    "arch_code_a": ("arch_code_a", "code_a"),
    "arch_code_c": ("arch_code_c", "code_c"),
}


def arch_code_from_mapping(data: Any, source: str = "architecture") -> ArchCode:
    if not isinstance(data, dict):
        raise ArchCodeError(f"{source}: expected a dict of arrays, got {type(data).__name__}")
    found = {}
    for key, aliases in _KEY_ALIASES.items():
        for alias in aliases:
            if alias in data:
                found[key] = _as_int_array(data[alias], alias)
                break
        else:
            raise ArchCodeError(
                f"{source}: missing '{key}' (accepted keys: node_a, arch_code_a/code_a, arch_code_c/code_c; "
                f"found {sorted(map(str, data))})"
            )
    a_max = data.get("arch_code_a_max")
    extra = {k: v for k, v in data.items() if k not in {"node_a", "arch_code_a", "code_a", "arch_code_c", "code_c", "arch_code_a_max"}}
    return ArchCode(
        node_a=found["node_a"],
        arch_code_a=found["arch_code_a"],
        arch_code_c=found["arch_code_c"],
        arch_code_a_max=None if a_max is None else np.asarray(a_max),
        extra=extra,
    ).validate()


def load_arch_code(path: str | os.PathLike) -> ArchCode:
    """Read an architecture file in any published format without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ArchCodeError(f"architecture file not found: {path}")
    try:
        data = safe_torch_load(path)
    except Exception as exc:
        raise ArchCodeError(f"{path}: not a readable architecture file ({str(exc).splitlines()[0]})") from exc
    return arch_code_from_mapping(data, str(path))


def save_arch_code(arch: ArchCode, path: str | os.PathLike, **extra: Any) -> None:
    """Save in the tutorial/bundle format (numpy arrays under the published keys), atomically."""
    arch.validate()
    payload: dict[str, Any] = dict(arch.as_dict())
    payload.update(extra)
    atomic.torch_save(payload, path)
