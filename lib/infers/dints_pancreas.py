"""The ``dints_pancreas`` inference task: pancreas (1) and pancreatic tumour (2) from a 3-D CT.

Pipeline: load + validate -> channel first -> RAS -> model spacing -> HU -87..199 to 0..1 -> sliding
window (Gaussian blending; by default the coarse-to-fine fast path of :mod:`lib.inference.fast_path`)
-> softmax -> small stray components dropped (``--conf min_component_fraction``) -> resample back to the
input's exact grid + argmax -> uint8 label, written as ``.nii.gz`` or ``.nrrd``. The network runs on the
backend chosen with ``--conf backend`` (:mod:`lib.inference.backends`; per request with ``"backend"``). The
network is rebuilt from the weights file whenever that file changes on disk, so a model published by
training is used by the next request without a restart (and compiled backends / TensorRT engines are
rebuilt for it).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import Any, Callable, Sequence

import torch
from monai.transforms import EnsureChannelFirstd, Orientationd, ScaleIntensityRanged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.configs.profiles import LABELS, Profile
from lib.errors import InputError
from lib.inference.aot_package import BackgroundBuilds
from lib.inference.backends import (
    EAGER_BACKENDS,
    BackendOptions,
    ModelCache,
    PreparedModel,
    aot_package_path,
    is_cuda,
    normalise_backend,
    prepare,
    resolve_backend,
)
from lib.inference.fast_path import FastPathOptions, configure_threads, fast_pass, full_pass
from lib.networks.arch_code import ArchCode, ArchCodeError, load_arch_code
from lib.networks.factory import CheckpointError, file_checksum, load_network
from lib.transforms.load import InputLimits, LoadCTd, check_resampled_size
from lib.transforms.components import DEFAULT_MIN_FRACTION, DropSmallComponentsd, parse_min_fraction
from lib.transforms.restore import RestoreLabeld
from lib.transforms.spacing import SafeSpacingd
from lib.transforms.writer import normalise_extension, write_label

logger = logging.getLogger(__name__)


class CheckResampledSized:
    """Refuse inputs whose grid at the model spacing would be absurdly large."""

    def __init__(self, spacing, limits: InputLimits, key: str = "image"):
        self.spacing, self.limits, self.key = spacing, limits, key

    def __call__(self, data):
        check_resampled_size(data[f"{self.key}_input_shape"], data[f"{self.key}_input_affine"], self.spacing, self.limits)
        return data


class Softmaxd:
    def __init__(self, key: str = "pred"):
        self.key = key

    def __call__(self, data):
        data[self.key] = torch.softmax(data[self.key].float(), dim=0)
        return data


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


# stitch on the GPU while the output buffer (scores + weight map) of the sliding window stays below this
GPU_STITCH_BYTES = 2 << 30


class DiNTSPancreasInfer(BasicInferTask):
    """MONAI Label segmentation task backed by a DiNTS network."""

    def __init__(
        self,
        weights: Sequence[str],
        arch_file: str,
        profile: Profile,
        limits: InputLimits | None = None,
        backend: str = "auto",
        backend_options: BackendOptions | None = None,
        fast_path: FastPathOptions | None = None,
        num_threads: int = 0,
        min_component_fraction: float = DEFAULT_MIN_FRACTION,
        background_compile: bool = False,
        description: str = "DiNTS segmentation of the pancreas and pancreatic tumour in CT",
        **kwargs,
    ):
        super().__init__(
            path=list(weights),
            network=None,
            type=InferType.SEGMENTATION,
            labels=dict(LABELS),
            dimension=3,
            description=description,
            roi_size=profile.roi_size,
            config={
                "profile": profile.name,
                "sw_batch_size": profile.sw_batch_size,
                "sw_overlap": profile.sw_overlap,
                "result_extension": ".nii.gz",
                "backend": normalise_backend(backend),
                "fast_path": (fast_path or FastPathOptions()).enabled,
                "min_component_fraction": float(min_component_fraction),
            },
            **kwargs,
        )
        self.profile = profile
        self.arch_file = arch_file
        self.limits = limits or InputLimits()
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[tuple, torch.nn.Module, dict]] = {}
        self._checksums: dict[tuple, str] = {}  # (path, mtime, size) -> checksum
        self.backend = normalise_backend(backend)
        self.backend_options = backend_options or BackendOptions(
            roi_size=tuple(profile.roi_size), sw_batch_size=profile.sw_batch_size)
        self.fast_path = fast_path or FastPathOptions()
        self.num_threads = int(num_threads or 0)
        self.min_component_fraction = float(min_component_fraction)
        self._models = ModelCache()
        # CPU `auto`: build the AOTInductor package in a low-priority process, run eagerly until it is there
        self.background_compile = bool(background_compile)
        self._builds = BackgroundBuilds()

    # ---- model -----------------------------------------------------------------------------------
    def is_valid(self) -> bool:
        return self.get_path() is not None

    def model_info(self) -> dict[str, Any]:
        path = self.get_path()
        if not path:
            return {"path": None, "checksum": None}
        return {"path": os.path.basename(path), "checksum": self._weights_checksum(path)}

    def _weights_checksum(self, path: str) -> str:
        """``file_checksum`` of the weights, hashed once per file version (not on every request and /info)."""
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._checksums:
            self._checksums.clear()
            self._checksums[key] = file_checksum(path)
        return self._checksums[key]

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model"] = self.model_info()
        info["backend"] = self.backend
        info["fast_path"] = self.fast_path.enabled
        return info

    def _arch(self) -> ArchCode | None:
        if self.arch_file and os.path.exists(self.arch_file):
            return load_arch_code(self.arch_file)
        return None

    def _get_network(self, device, data):
        path = self.get_path()
        if not path:
            raise InputError(f"no model weights found (looked for {', '.join(self.path)})", 503)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        device = str(device)
        with self._lock:
            cached = self._cached.get(device)
            if cached and cached[0] == key:
                return cached[1]
            try:
                net, meta = load_network(path, self._arch(), self.profile.channel_mul)
            except (CheckpointError, ArchCodeError) as exc:
                raise InputError(f"the model cannot be loaded: {exc}", 503) from exc
            net = net.to(device).eval()
            self._cached[device] = (key, net, meta)
            logger.info(f"Loaded {os.path.basename(path)} ({self._weights_checksum(path)}) on {device}")
            return net

    def _cpu_package(self, device, backend: str) -> str | None:
        """The compiled package ``auto`` switches to (CPU, ``background_compile``) for the current weights, else None."""
        if not (backend == "auto" and self.background_compile and resolve_backend("auto", device) == "torch"):
            return None
        path = self.get_path()
        return aot_package_path(path, self._weights_checksum(path), self.backend_options)

    def get_model(self, device, backend: str | None = None, data=None) -> PreparedModel:
        """The network on ``backend`` (default: ``--conf backend``), built once per weights version and device.

        ``auto`` on the CPU with ``background_compile``: the AOTInductor package once it exists for these weights,
        eager ``torch`` until then, with the package's build started in the background."""
        backend = normalise_backend(backend or self.backend)
        net = self._get_network(device, data)  # reloads on a weights change; raises InputError if unusable
        path = self.get_path()
        with self._lock:
            key = self._cached[str(device)][0]
        checksum = self._weights_checksum(path)
        requested = backend
        note = None
        package = self._cpu_package(device, backend)
        if package:
            if os.path.exists(package):
                backend = "aot"
            else:
                backend = "torch"
                self._builds.start(package, path, self.arch_file or None, self.profile.channel_mul,
                                   self.backend_options.roi_size, self.backend_options.sw_batch_size)
                note = self._builds.failed.get(package) or "compiled package building in the background"
        prepared = self._models.get(
            (key, backend, str(device)),
            lambda: prepare(net, backend, str(device), self.backend_options, weights_path=path, checksum=checksum),
        )
        if requested != prepared.requested or note:
            prepared = dataclasses.replace(prepared, requested=requested, info={**prepared.info, "note": note} if note else prepared.info)
        return prepared

    def warm_up(self, device: str = "cpu", wait: bool = False, timeout: float | None = None) -> PreparedModel | None:
        """Load the network; for CPU ``auto`` with ``background_compile`` also start building its compiled package
        (the server calls this at start-up) and return what ``auto`` runs now. ``wait``: first let that build
        end (or ``timeout`` pass)."""
        self._get_network(device, None)
        package = self._cpu_package(device, self.backend)
        if package is None:
            return None
        prepared = self.get_model(device, "auto")
        if wait:
            self._builds.wait(package, timeout)
            prepared = self.get_model(device, "auto")
        return prepared

    def run_inferer(self, data: dict[str, Any], convert_to_batch=True, device="cuda"):
        configure_threads(self.num_threads)
        try:
            backend = normalise_backend(data.get("backend") or self.backend)
        except ValueError as exc:
            raise InputError(str(exc), 400) from exc
        model = self.get_model(device, backend, data)
        image = data[self.input_key]
        image = (image if torch.is_tensor(image) else torch.as_tensor(image)).float()
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        sw_batch, overlap = self.window_settings(data)
        check_window_count(tuple(image.shape[1:]), self.roi_size, overlap, self.limits.max_windows)
        stitch, sw_device = None, None
        if is_cuda(device):
            sw_device = torch.device(device)
            n_bytes = 2 * (1 + len(LABELS)) * image[0].numel() * 4
            stitch = sw_device if n_bytes < GPU_STITCH_BYTES else torch.device("cpu")
            image = image.to(stitch)
        use_fast = _truthy(data.get("fast_path", self.fast_path.enabled))
        if use_fast:
            result = fast_pass(image, model.forward, self.roi_size, sw_batch, overlap, self.profile.spacing,
                               self.fast_path, device=stitch, sw_device=sw_device, any_shape=model.backend in EAGER_BACKENDS,
                               min_component_fraction=self.component_fraction(data),
                               coarse_forward=None if is_cuda(device) else self._get_network(device, data))
        else:
            result = full_pass(image, model.forward, self.roi_size, sw_batch, overlap, device=stitch, sw_device=sw_device)
        if is_cuda(device):
            torch.cuda.empty_cache()
        data["pred"] = result.scores.cpu()
        data["pred_offset"] = result.offset
        data["inference"] = {**model.describe(), **result.stats}
        logger.info(f"Inference: {data['inference']}")
        return data

    # ---- transforms ------------------------------------------------------------------------------
    def pre_transforms(self, data=None) -> Sequence[Callable]:
        a_min, a_max = self.profile.hu_window
        return [
            LoadCTd(keys="image", limits=self.limits),
            CheckResampledSized(self.profile.spacing, self.limits),
            EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            SafeSpacingd(keys="image", pixdim=self.profile.spacing, mode="bilinear"),
            ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True),
        ]

    def inverse_transforms(self, data=None):
        return None  # the exact inversion happens in RestoreLabeld

    def post_transforms(self, data=None) -> Sequence[Callable]:
        fraction = self.component_fraction(data or {})
        return [Softmaxd("pred"), DropSmallComponentsd("pred", fraction), RestoreLabeld("pred", ref_key="image")]

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        ext = normalise_extension(extension or data.get("result_extension"))
        label = data["pred"]
        if not data.get("result_write_to_file", True):
            result = {"label_names": dict(LABELS), "model": self.model_info()}
            if data.get("inference"):
                result["inference"] = data["inference"]
            return label, result
        path = write_label(label, data["pred_affine"], ext, dict(LABELS))
        result = {
            "label_names": dict(LABELS),
            "model": self.model_info(),
            "voxels": {name: int((label == value).sum()) for name, value in LABELS.items()},
        }
        if data.get("inference"):
            result["inference"] = data["inference"]
        return path, result

    def component_fraction(self, request: dict) -> float:
        """``min_component_fraction`` of the request (default ``--conf``), checked: 0..1."""
        try:
            return parse_min_fraction(request.get("min_component_fraction", self.min_component_fraction))
        except ValueError as exc:
            raise InputError(str(exc), 400) from exc

    def window_settings(self, request: dict) -> tuple[int, float]:
        """``sw_batch_size`` (1..``max_sw_batch_size``) and ``sw_overlap`` (0..0.95) of a request, checked."""
        raw_batch = request.get("sw_batch_size", self.profile.sw_batch_size)
        raw_overlap = request.get("sw_overlap", self.profile.sw_overlap)
        try:
            if isinstance(raw_batch, bool) or float(raw_batch) != int(float(raw_batch)):
                raise ValueError
            batch = int(float(raw_batch))
        except (TypeError, ValueError):
            raise InputError(f"sw_batch_size must be a whole number, got {raw_batch!r}", 400) from None
        if not 1 <= batch <= self.limits.max_sw_batch_size:
            raise InputError(f"sw_batch_size must be 1..{self.limits.max_sw_batch_size} (--conf max_sw_batch_size), "
                             f"got {batch}", 400)
        try:
            if isinstance(raw_overlap, bool):
                raise ValueError
            overlap = float(raw_overlap)
        except (TypeError, ValueError):
            raise InputError(f"sw_overlap must be a number, got {raw_overlap!r}", 400) from None
        if not 0.0 <= overlap <= self.limits.max_overlap:
            raise InputError(f"sw_overlap must be 0..{self.limits.max_overlap}, got {raw_overlap!r}", 400)
        return batch, overlap

    def check_request(self, request: dict) -> None:
        """Refuse bad request parameters before any work (and before waiting for the inference slot)."""
        try:
            ext = request.get("result_extension")
            if ext:
                normalise_extension(ext)
            normalise_backend(request.get("backend") or self.backend)
        except ValueError as exc:
            raise InputError(str(exc), 400) from exc
        self.window_settings(request)
        self.component_fraction(request)

    def __call__(self, request, callbacks=None):
        self.check_request(request)
        return super().__call__(request, callbacks)


def window_count(shape, roi, overlap: float) -> int:
    """Windows of MONAI's sliding-window grid over ``shape`` (its scan interval: ``int(roi * (1 - overlap))``)."""
    n = 1
    for size, r in zip(shape, roi):
        step = max(1, int(r * (1.0 - overlap)))
        n *= 1 if size <= r else math.ceil((size - r) / step) + 1
    return n


def check_window_count(shape, roi, overlap: float, limit: int) -> None:
    n = window_count(shape, roi, overlap)
    if n > limit:
        raise InputError(f"this request would run {n:,} sliding windows over a {list(shape)} grid at overlap {overlap}, "
                         f"over the server's limit of {limit:,} (--conf max_windows): lower sw_overlap", 400)
