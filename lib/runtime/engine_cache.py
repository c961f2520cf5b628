"""The on-disk engine cache: where a compiled form of a weights file lives, and when it is stale.

Engines (TorchScript, TensorRT, the AOTInductor package) sit next to the weights they were built from
(``<weights folder>/engines``, or ``--conf engine_dir``), named ``<weights stem>.<backend>.<precision>.<key>``
where the key hashes everything that makes an engine unusable when it changes: the weights checksum, precision,
batch range, window, device and library versions. A new model (published by training) or an upgrade gets a new
key, and the engines of the old one are pruned when the new one is written.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import platform
from typing import Sequence

import torch

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import monai

        versions["monai"] = monai.__version__
    except Exception:  # pragma: no cover
        pass
    if torch.version.cuda:
        versions["cuda"] = str(torch.version.cuda)
    for mod in ("torch_tensorrt", "tensorrt"):
        if importlib.util.find_spec(mod) is not None:
            try:
                versions[mod] = __import__(mod).__version__
            except Exception as exc:  # a broken install is its own version
                versions[mod] = f"unimportable:{type(exc).__name__}"
    return versions


def device_name(device) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return torch.cuda.get_device_name(index)
    return "cpu"


def engine_key(
    weights_checksum: str,
    backend: str,
    precision: str,
    batch_range: Sequence[int],
    roi_size: Sequence[int],
    device: str = "cpu",
    versions: dict | None = None,
) -> str:
    """Identity of a compiled engine: any change of weights, precision, batch range, window, device or libraries
    gives a different key (and so a rebuild)."""
    payload = {
        "weights": weights_checksum,
        "backend": backend,
        "precision": precision,
        "batch_range": [int(b) for b in batch_range],
        "roi_size": [int(r) for r in roi_size],
        "device": device,
        "versions": versions if versions is not None else library_versions(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def engine_path(engine_dir: str, weights_path: str, backend: str, precision: str, key: str, ext: str = ".ts") -> str:
    stem = os.path.basename(weights_path).split(".")[0]
    return os.path.join(engine_dir, f"{stem}.{backend}.{precision}.{key}{ext}")


def prune_engines(engine_dir: str, weights_path: str, backend: str, precision: str, keep: str, ext: str = ".ts") -> None:
    """Remove this weights file's stale engines of the same backend/precision (old weights, old libraries); files
    whose path starts with ``keep`` stay."""
    stem = os.path.basename(weights_path).split(".")[0]
    for old in glob.glob(os.path.join(engine_dir, f"{stem}.{backend}.{precision}.*{ext}")):
        if not os.path.abspath(old).startswith(os.path.abspath(keep)):
            try:
                os.remove(old)
                logger.info(f"Removed stale engine {os.path.basename(old)}")
            except OSError:
                pass


def default_engine_dir(weights_path: str) -> str:
    """Engines live next to the weights they were built from: ``<weights folder>/engines``."""
    return os.path.join(os.path.dirname(os.path.abspath(weights_path)), "engines")


def cached_engine_path(weights_path: str, checksum: str, backend: str, precision: str, opts, device) -> str:
    """Where the engine for these weights/settings lives (TorchScript is device independent: traced on the
    device it runs on but keyed as 'any' so an export from the command line is found by the server)."""
    engine_dir = opts.engine_dir or default_engine_dir(weights_path)
    if backend == "tensorrt":
        key = engine_key(checksum, backend, precision, opts.batch_range, opts.roi_size, device_name(device))
    else:
        key = engine_key(checksum, backend, precision, (1, opts.batch_range[1]), opts.roi_size, "any")
    return engine_path(engine_dir, weights_path, backend, precision, key)
