"""Export the network as TorchScript or a TensorRT engine (TorchScript with TensorRT ops), the way the
model-zoo bundle's ``python -m monai.bundle trt_export`` does: traced, fp32/fp16, dynamic batch,
``aten::upsample_trilinear3d`` left to torch; or as the CPU's AOTInductor package. Used by
``scripts/export_model.py``."""

from __future__ import annotations

import logging
import os

import torch

from lib.runtime.aot_package import BackendUnavailable
from lib.runtime.backends import BackendOptions
from lib.runtime.traced_engines import build_tensorrt, normalise_precision, trace_model
from lib import atomic
from lib.networks.factory import NetworkSpec, file_checksum, input_channels
from lib.runtime.aot_package import aot_package_path, check_cpu_compiler
from lib.runtime.engine_cache import cached_engine_path, prune_engines

logger = logging.getLogger(__name__)


def export_model(
    weights: str,
    fmt: str = "torchscript",
    spec: NetworkSpec | None = None,
    precision: str = "fp16",
    roi_size=(96, 96, 96),
    batch_range=(1, 8),
    opt_batch: int = 4,
    output: str | None = None,
    device: str | None = None,
    verify: bool = True,
) -> str:
    """Write the export and return its path. Default path: the server's engine cache (``<weights dir>/engines``),
    so a running server with the same settings picks the file up instead of building it again."""
    fmt = fmt.lower()
    if fmt not in ("torchscript", "tensorrt", "aot"):
        raise ValueError("format must be torchscript, tensorrt or aot")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net, _ = (spec or NetworkSpec("dints", 3)).load(weights)
    net = net.to(device).eval()
    opts = BackendOptions(roi_size=tuple(roi_size), sw_batch_size=opt_batch, batch_range=tuple(batch_range),
                          trt_precision=precision)
    if fmt == "aot":
        return _export_aot(net, weights, opts, output, verify)
    precision = "fp32" if fmt == "torchscript" else normalise_precision(precision)
    path = output or cached_engine_path(weights, file_checksum(weights), fmt, precision, opts, device)
    if fmt == "torchscript":
        model = trace_model(net, device, roi_size)
    else:
        if not str(device).startswith("cuda"):
            raise BackendUnavailable("TensorRT export needs a CUDA device")
        model = build_tensorrt(net, device, precision, roi_size, batch_range, opt_batch)
    atomic.write_with(path, lambda tmp: torch.jit.save(model, tmp))
    if output is None:
        prune_engines(os.path.dirname(path), weights, fmt, precision, path)
    if verify:
        x = torch.rand((min(2, int(batch_range[1])), input_channels(net), *roi_size), device=device)
        loaded = torch.jit.load(path, map_location=device).eval()
        with torch.no_grad():
            ref, out = net(x).float(), loaded(x).float()
        err = float((ref - out).abs().max())
        tol = 1e-3 if precision == "fp32" else 5e-2 * float(ref.abs().max())
        logger.info(f"verify {os.path.basename(path)}: max |eager - export| = {err:.3g} (tolerance {tol:.3g})")
        if err > tol:
            raise RuntimeError(f"exported model differs from the eager network: max abs error {err:.3g} > {tol:.3g}")
    return path


def _export_aot(net, weights: str, opts: BackendOptions, output: str | None, verify: bool) -> str:
    """The CPU package (batch ``opts.sw_batch_size``) where the server's ``auto``/``aot`` backends look for it."""
    from lib.runtime.aot_package import build_package, load_package

    check_cpu_compiler()
    net = net.cpu()
    path = output or aot_package_path(weights, file_checksum(weights), opts)
    build_package(net, path, opts.roi_size, opts.sw_batch_size, weights_path=None if output else weights)
    if verify:
        x = torch.rand((opts.sw_batch_size, 1, *opts.roi_size))
        with torch.no_grad():
            err = float((net(x).float() - load_package(path)(x).float()).abs().max())
        logger.info(f"verify {os.path.basename(path)}: max |eager - package| = {err:.3g} (tolerance 1e-3)")
        if err > 1e-3:
            raise RuntimeError(f"compiled package differs from the eager network: max abs error {err:.3g} > 1e-3")
    return path
