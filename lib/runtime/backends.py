"""Model backends for inference, chosen with ``--conf backend`` (or per request with ``"backend"``).

=============  ===============================================================================================
``torch``      eager PyTorch, fp32; on the CPU in its kernels' fast layouts (:mod:`lib.runtime.cpu_layouts`).
``amp``        eager PyTorch under ``torch.autocast`` fp16 (CUDA only; on CPU it falls back to ``torch``).
``compile``    ``torch.compile`` (inductor) of the network; AMP on CUDA, with CUDA graphs
               (``mode="reduce-overhead"``) since the sliding window always feeds one static batch shape.
               Compiled once per (weights, device) and kept for later requests; inductor's own on-disk cache
               (``TORCHINDUCTOR_CACHE_DIR``) makes a restarted server compile faster.
``aot``        CPU only: the same inductor kernels compiled ahead of time into a package file (AOTInductor, ``.pt2``,
               :mod:`lib.runtime.aot_package`), cached in the engine cache like TorchScript/TensorRT and loaded
               in well under a second by later processes. Built in the request that first needs it (minutes).
``torchscript`` ``torch.jit.trace`` of the network (DiNTS does not script, MONAI issue #6079), saved in the
               engine cache and reloaded by later processes.
``tensorrt``   ``torch-tensorrt`` (traced, TorchScript IR, like the bundle's ``trt_export``), fp16 or fp32,
               dynamic batch 1..8, ``aten::upsample_trilinear3d`` left to torch. The engine is cached on disk
               next to the weights, keyed by weights checksum, precision, batch range, window size, device
               and library versions, so a new model (e.g. published by training) or an upgrade rebuilds it.
``bf16``       CPU only: eager PyTorch under bf16 autocast in channels-last-3d memory, on CPUs with native bf16
               (AMX, AVX-512 BF16), once its labels agree with fp32's on calibration images
               (:mod:`lib.runtime.reduced_precision`; the verdict is cached like an engine).
``openvino``   CPU only, optional package: the network converted to OpenVINO (cached in the engine cache), bf16
               behind the same gate where the CPU has it, else f32 (:mod:`lib.runtime.openvino_backend`).
``auto``       ``tensorrt`` (fp16) where CUDA and torch-tensorrt are present, else ``compile`` (AMP) on CUDA,
               else the CPU path: ``openvino`` once a background process has converted the network and run it
               on this CPU (``--conf background_compile``, the ``openvino`` package installed); until then, or
               if that fails, ``bf16`` where the CPU has native bf16 and the gate passes
               (``--conf cpu_precision auto``), otherwise ``aot`` when its package for these weights is in the
               cache (built in a background process where no OpenVINO model is coming), ``torch`` until then.
=============  ===============================================================================================

Whatever fails (no CUDA, package missing, a failed build or load), :func:`prepare` logs one line saying why and
falls back (``tensorrt`` -> ``compile``/AMP on CUDA or ``torch`` on CPU; ``compile``/``aot``/``openvino``/``torchscript``
-> ``torch``);
a request never fails because of its backend.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# BackendUnavailable and check_cpu_compiler live in aot_package, below this module, which raises them too
from lib.runtime.aot_package import BackendUnavailable, aot_package_path, check_cpu_compiler
from lib.runtime.cpu_layouts import ChannelsLastModel
from lib.runtime.fixed_batch import FixedBatch
from lib.networks.factory import input_channels
from lib.runtime.openvino_backend import build_openvino
from lib.runtime.reduced_precision import build_bf16
from lib.runtime.static_dints import static_network
from lib.runtime.traced_engines import (build_tensorrt_cached, build_torchscript, is_cuda, tensorrt_installed)

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "amp", "bf16", "compile", "aot", "openvino", "torchscript", "tensorrt")
EAGER_BACKENDS = ("torch", "amp", "bf16")  # run any input shape as is (compiled and traced ones are built for the window)
DEFAULT_BATCH_RANGE = (1, 8)


def normalise_backend(name: str | None) -> str:
    value = (name or "auto").strip().lower().replace("-", "").replace("_", "")
    aliases = {"trt": "tensorrt", "jit": "torchscript", "ts": "torchscript", "eager": "torch", "cpu": "torch",
               "inductor": "compile", "torchcompile": "compile", "aotinductor": "aot", "pt2": "aot"}
    value = aliases.get(value, value)
    if value not in BACKENDS:
        raise ValueError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
    return value


def resolve_backend(name: str | None, device) -> str:
    """``auto`` -> the fastest backend this machine can run; any other name is returned normalised."""
    name = normalise_backend(name)
    if name != "auto":
        return name
    if is_cuda(device) and torch.cuda.is_available():
        return "tensorrt" if tensorrt_installed() else "compile"
    return "torch"


# ---- model wrappers -------------------------------------------------------------------------------------
class AutocastModel(nn.Module):
    """Runs the wrapped model under ``torch.autocast`` (fp16 on CUDA) and returns fp32 scores."""

    def __init__(self, model: nn.Module, device_type: str = "cuda", dtype: torch.dtype = torch.float16):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, x):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.model(x).float()


@dataclass
class PreparedModel:
    """A callable (batch -> class scores) plus how it was obtained."""

    forward: Callable
    backend: str  # what actually runs
    requested: str
    device: str
    precision: str = "fp32"
    fallback_reason: str | None = None
    engine_file: str | None = None
    build_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        out = {"backend": self.backend, "requested": self.requested, "precision": self.precision, "device": self.device}
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        if self.engine_file:
            out["engine_file"] = os.path.basename(self.engine_file)
        if self.info.get("note"):
            out["note"] = self.info["note"]
        return out


@dataclass
class BackendOptions:
    roi_size: tuple[int, int, int] = (96, 96, 96)
    sw_batch_size: int = 2
    trt_precision: str = "fp16"
    batch_range: tuple[int, int] = DEFAULT_BATCH_RANGE
    engine_dir: str | None = None  # default: "<weights folder>/engines"
    compile_mode: str | None = None  # default: "reduce-overhead" on CUDA (CUDA graphs), inductor default on CPU
    calibration: object | None = None  # bf16's gate images (lib.transforms.calibration.CalibrationImages)
    cpu_precision: str = "auto"  # auto: CPU ``auto`` runs bf16 where the CPU has it and the gate passes; fp32: never


def _build_torch(net, device, amp: bool) -> tuple[Callable, str]:
    if amp:
        if not is_cuda(device):
            raise BackendUnavailable("AMP (fp16 autocast) needs CUDA; this device is the CPU")
        return AutocastModel(net, "cuda"), "amp-fp16"
    if not is_cuda(device):  # a copy: the shared network keeps its layout for the other backends and the gate
        return ChannelsLastModel(copy.deepcopy(net).eval()), "fp32"
    return net, "fp32"


def _check_inductor(device) -> None:
    if not is_cuda(device):
        check_cpu_compiler()


def _build_aot(net, device, opts: BackendOptions, weights_path: str | None, checksum: str | None):
    """The AOTInductor package (:mod:`lib.runtime.aot_package`): loaded from the engine cache, else built here."""
    from lib.runtime.aot_package import build_package, load_package

    if is_cuda(device):
        raise BackendUnavailable("'aot' is the CPU package; on CUDA use 'compile' or 'tensorrt'")
    check_cpu_compiler()
    path = aot_package_path(weights_path, checksum, opts) if weights_path and checksum else None
    if path and os.path.exists(path):
        try:
            return FixedBatch(load_package(path), opts.sw_batch_size), "fp32", path
        except Exception as exc:
            logger.warning(f"Cached package {os.path.basename(path)} unreadable ({exc}); building it again")
    if path is None:  # no weights file to key it by: build, load, forget
        import shutil
        import tempfile

        tmp_dir = tempfile.mkdtemp(prefix="dints-aot-")
        try:
            runner = load_package(build_package(net, os.path.join(tmp_dir, "model.pt2"), opts.roi_size, opts.sw_batch_size))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return FixedBatch(runner, opts.sw_batch_size), "fp32", None
    build_package(net, path, opts.roi_size, opts.sw_batch_size, weights_path=weights_path)
    return FixedBatch(load_package(path), opts.sw_batch_size), "fp32", path


def _build_compile(net, device, opts: BackendOptions) -> tuple[Callable, str]:
    _check_inductor(device)
    model = static_network(net)
    cuda = is_cuda(device)
    if cuda:
        model = AutocastModel(model, "cuda")
    mode = opts.compile_mode or ("reduce-overhead" if cuda else None)
    compiled = torch.compile(model, dynamic=False, fullgraph=True, mode=mode)
    example = torch.zeros((opts.sw_batch_size, input_channels(net), *opts.roi_size), device=device)
    with torch.no_grad():  # compile now (the first request pays, not the n-th window of it); errors surface here
        compiled(example)
    return FixedBatch(compiled, opts.sw_batch_size), "amp-fp16" if cuda else "fp32"


def prepare(
    net: nn.Module,
    backend: str | None,
    device,
    opts: BackendOptions | None = None,
    weights_path: str | None = None,
    checksum: str | None = None,
) -> PreparedModel:
    """Turn an eval-mode network into the requested backend's callable, falling back (one log line) on failure."""
    opts = opts or BackendOptions()
    device = str(device)
    requested = normalise_backend(backend)
    chain = [resolve_backend(requested, device)]
    cuda = is_cuda(device)
    if chain[0] == "tensorrt":
        chain += ["compile", "torch"] if cuda else ["torch"]
    elif chain[0] in ("compile", "aot", "openvino", "torchscript", "amp", "bf16"):
        chain += ["torch"]
    net = net.to(device).eval()
    reasons = []
    for name in chain:
        start = time.time()
        try:
            engine, info = None, {}
            if name == "torch":
                fn, precision = _build_torch(net, device, amp=False)
            elif name == "amp":
                fn, precision = _build_torch(net, device, amp=True)
            elif name == "bf16":
                fn, precision, info = build_bf16(net, device, opts, weights_path, checksum)
            elif name == "compile":
                fn, precision = _build_compile(net, device, opts)
            elif name == "aot":
                fn, precision, engine = _build_aot(net, device, opts, weights_path, checksum)
            elif name == "openvino":
                model, precision, engine, info = build_openvino(net, device, opts, weights_path, checksum)
                fn = FixedBatch(model, opts.sw_batch_size)
            elif name == "torchscript":
                fn, precision, engine = build_torchscript(net, device, opts, weights_path, checksum)
            else:
                model, precision, engine = build_tensorrt_cached(net, device, opts, weights_path, checksum)
                fn = FixedBatch(model, opts.sw_batch_size) if opts.sw_batch_size <= opts.batch_range[1] else model
        except Exception as exc:  # BackendUnavailable, compiler errors, TensorRT build errors...
            reason = f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            reasons.append(reason)
            continue
        prepared = PreparedModel(
            forward=fn, backend=name, requested=requested, device=device, precision=precision,
            fallback_reason="; ".join(reasons) or None, engine_file=engine, build_seconds=time.time() - start, info=info,
        )
        if reasons:
            logger.warning(f"Backend '{requested}' unavailable ({'; '.join(reasons)}); falling back to '{name}'")
        elif name != "torch":
            logger.info(f"Backend '{name}' ready on {device} ({precision}) in {prepared.build_seconds:.1f}s")
        return prepared
    raise RuntimeError(f"no backend could run: {'; '.join(reasons)}")  # 'torch' never fails to build


class ModelCache:
    """Prepared models per (weights identity, backend, device): each backend is built once per weights version."""

    def __init__(self, max_entries: int = 4):
        self._lock = threading.Lock()
        self._entries: dict[tuple, PreparedModel] = {}
        self.max_entries = max_entries

    def get(self, key: tuple, build: Callable[[], PreparedModel]) -> PreparedModel:
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            prepared = build()
            # a new weights version replaces older ones (no point keeping compiled graphs of an old model)
            for old in [k for k in self._entries if k[0] != key[0] or len(self._entries) >= self.max_entries]:
                self._entries.pop(old, None)
            self._entries[key] = prepared
            return prepared
