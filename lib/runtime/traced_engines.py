"""Traced networks kept on disk: TorchScript (``torch.jit.trace``; DiNTS does not script, MONAI issue #6079) and
TensorRT through ``torch-tensorrt`` (traced, TorchScript IR, as MONAI's ``convert_to_trt`` and the bundle's
``trt_export`` build it). Both are cached in the engine cache (:mod:`lib.runtime.engine_cache`), keyed by weights
checksum, precision, batch range, window, device and library versions. ``opts`` is a
:class:`lib.runtime.backends.BackendOptions`."""

from __future__ import annotations

import importlib.util
import logging
import os

import torch
from torch import nn

from lib import atomic
from lib.networks.factory import input_channels
from lib.runtime.aot_package import BackendUnavailable
from lib.runtime.engine_cache import cached_engine_path, prune_engines
from lib.runtime.static_dints import static_network

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")


def normalise_precision(value: str | None) -> str:
    v = (value or "fp16").strip().lower()
    v = {"float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}.get(v, v)
    if v not in PRECISIONS:
        raise ValueError(f"unknown precision '{value}': choose fp16 or fp32")
    return v


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("torch_tensorrt") is not None


def trace_model(net: nn.Module, device, roi_size, batch: int = 1) -> torch.jit.ScriptModule:
    example = torch.zeros((batch, input_channels(net), *roi_size), device=device)
    with torch.no_grad():
        return torch.jit.trace(static_network(net).to(device).eval(), example, check_trace=False)


def build_torchscript(net, device, opts, weights_path: str | None, checksum: str | None):
    path = cached_engine_path(weights_path, checksum, "torchscript", "fp32", opts, device) if weights_path and checksum else None
    if path:
        if os.path.exists(path):
            try:
                return torch.jit.load(path, map_location=device).eval(), "fp32", path
            except Exception as exc:
                logger.warning(f"Cached TorchScript {os.path.basename(path)} unreadable ({exc}); tracing again")
    traced = trace_model(net, device, opts.roi_size)
    if path:
        try:
            atomic.write_with(path, lambda tmp: torch.jit.save(traced, tmp))
            prune_engines(os.path.dirname(path), weights_path, "torchscript", "fp32", path)
        except OSError as exc:
            logger.warning(f"Could not cache TorchScript in {path}: {exc}")
            path = None
    return traced, "fp32", path


def build_tensorrt(net, device, precision: str, roi_size, batch_range, opt_batch: int):
    """Trace + ``torch_tensorrt`` (TorchScript IR) exactly as MONAI's ``convert_to_trt`` / the bundle's ``trt_export``."""
    if not (is_cuda(device) and torch.cuda.is_available()):
        raise BackendUnavailable("TensorRT needs CUDA and no CUDA device is available")
    if not tensorrt_installed():
        raise BackendUnavailable("torch-tensorrt is not installed (optional GPU extra: pip install -r requirements-gpu.txt)")
    try:
        import torch_tensorrt  # noqa: F401  (lazy: gigabytes of CUDA libraries)
    except Exception as exc:
        raise BackendUnavailable(f"torch-tensorrt cannot be imported: {exc}") from exc
    from monai.networks.utils import convert_to_trt

    lo, hi = (int(b) for b in batch_range)
    opt = min(max(int(opt_batch), lo), hi)
    return convert_to_trt(
        static_network(net).to(device).eval(),
        precision=precision,
        input_shape=[opt, input_channels(net), *roi_size],
        dynamic_batchsize=[lo, opt, hi],
        use_trace=True,
        verify=False,
        device=torch.device(device).index or 0,
        torch_executed_ops=["aten::upsample_trilinear3d"],
        truncate_long_and_double=True,
    )


def build_tensorrt_cached(net, device, opts, weights_path: str | None, checksum: str | None):
    precision = normalise_precision(opts.trt_precision)
    if not (is_cuda(device) and torch.cuda.is_available()):
        raise BackendUnavailable("TensorRT needs CUDA and no CUDA device is available")
    if not tensorrt_installed():
        raise BackendUnavailable("torch-tensorrt is not installed (optional GPU extra: pip install -r requirements-gpu.txt)")
    path = cached_engine_path(weights_path, checksum, "tensorrt", precision, opts, device) if weights_path and checksum else None
    if path:
        if os.path.exists(path):
            import torch_tensorrt  # noqa: F401  (registers the TensorRT ops torch.jit.load needs)

            return torch.jit.load(path, map_location=device).eval(), precision, path
    model = build_tensorrt(net, device, precision, opts.roi_size, opts.batch_range, opts.sw_batch_size)
    if path:
        try:
            atomic.write_with(path, lambda tmp: torch.jit.save(model, tmp))
            prune_engines(os.path.dirname(path), weights_path, "tensorrt", precision, path)
        except Exception as exc:
            logger.warning(f"Could not cache the TensorRT engine in {path}: {exc}")
            path = None
    return model, precision, path
