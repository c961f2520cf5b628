"""The segmentation infer task of every ``--conf task`` / ``--conf network`` (``dints_pancreas`` by default).

Pipeline: load + validate -> the task's preprocessing (:mod:`lib.transforms.preprocessing`: channel first -> RAS ->
model spacing -> HU window to 0..1) -> sliding window (Gaussian blending; by default the coarse-to-fine fast
path of :mod:`lib.runtime.fast_path`) -> softmax -> small stray components dropped (``--conf
min_component_fraction``) -> resample back to the input's exact grid + argmax -> uint8 label, written as
``.nii.gz`` or ``.nrrd``. The network (DiNTS or UNet) runs on the backend chosen with ``--conf backend``
(:mod:`lib.runtime.backends`; per request with ``"backend"``). The served model
(:class:`lib.runtime.served_model.ServedModel`) is rebuilt from the weights file whenever that file changes on
disk, so a model published by training is used by the next request without a restart (and compiled backends /
TensorRT engines are rebuilt for it).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.errors import InputError
from lib.infers.served_task import ServedTask
from lib.params import request_flag
from lib.profiles import NETWORK_TITLES, Profile
from lib.runtime.backends import EAGER_BACKENDS, BackendOptions, PreparedModel, normalise_backend
from lib.runtime.traced_engines import is_cuda
from lib.runtime.fast_path import FastPathOptions, configure_threads, fast_pass, full_pass
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask
from lib.transforms.components import DEFAULT_MIN_FRACTION, DropSmallComponentsd, parse_min_fraction
from lib.transforms.load import InputLimits
from lib.transforms.preprocessing import ct_preprocessing
from lib.transforms.restore import RestoreLabeld
from lib.transforms.writer import normalise_extension, write_label

logger = logging.getLogger(__name__)


class Softmaxd:
    def __init__(self, key: str = "pred"):
        self.key = key

    def __call__(self, data):
        data[self.key] = torch.softmax(data[self.key].float(), dim=0)
        return data


# stitch on the GPU while the output buffer (scores + weight map) of the sliding window stays below this
GPU_STITCH_BYTES = 2 << 30


class SegmentationInfer(ServedTask):
    """MONAI Label segmentation task backed by the served model of a task (DiNTS or UNet)."""

    def __init__(
        self,
        served: ServedModel,
        task: SegmentationTask,
        profile: Profile,
        limits: InputLimits | None = None,
        backend: str = "auto",
        fast_path: FastPathOptions | None = None,
        num_threads: int = 0,
        min_component_fraction: float = DEFAULT_MIN_FRACTION,
        description: str | None = None,
        **kwargs,
    ):
        super().__init__(
            served, task, profile, InferType.SEGMENTATION,
            description or f"{NETWORK_TITLES[served.spec.network]} segmentation of the {task.description}",
            config={
                "sw_batch_size": profile.sw_batch_size,
                "sw_overlap": profile.sw_overlap,
                "backend": normalise_backend(backend),
                "fast_path": (fast_path or FastPathOptions()).enabled,
                "min_component_fraction": float(min_component_fraction),
            },
            limits=limits, fast_path=fast_path, num_threads=num_threads, min_component_fraction=min_component_fraction,
            **kwargs,
        )
        self.backend = normalise_backend(backend)

    @property
    def backend_options(self) -> BackendOptions:
        return self.served.backend_options

    # ---- model -----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        info = super().info()
        info["backend"] = self.backend
        info["fast_path"] = self.fast_path.enabled
        return info

    def get_model(self, device, backend: str | None = None, data=None) -> PreparedModel:
        """The network on ``backend`` (default: ``--conf backend``), see :meth:`ServedModel.prepared`."""
        return self.served.prepared(device, backend or self.backend)

    def warm_up(self, device: str = "cpu", wait: bool = False, timeout: float | None = None) -> PreparedModel | None:
        """Load the network now and, on the CPU with ``background_compile``, start building its faster form (the
        OpenVINO model or the compiled package; the server calls this at start-up); returns what ``auto`` runs now."""
        return self.served.warm_up(device, self.backend, wait, timeout)

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
            n_bytes = 2 * self.task.num_classes * image[0].numel() * 4
            stitch = sw_device if n_bytes < GPU_STITCH_BYTES else torch.device("cpu")
            image = image.to(stitch)
        use_fast = request_flag(data, "fast_path", self.fast_path.enabled)
        if use_fast:
            result = fast_pass(image, model.forward, self.roi_size, sw_batch, overlap, self.profile.spacing,
                               self.fast_path, device=stitch, sw_device=sw_device, any_shape=model.backend in EAGER_BACKENDS,
                               out_channels=self.task.num_classes, min_component_fraction=self.component_fraction(data))
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
        return ct_preprocessing(self.task, self.profile.spacing, ("image",), loader="checked", limits=self.limits)

    def inverse_transforms(self, data=None):
        return None  # the exact inversion happens in RestoreLabeld

    def post_transforms(self, data=None) -> Sequence[Callable]:
        fraction = self.component_fraction(data or {})
        return [Softmaxd("pred"), DropSmallComponentsd("pred", fraction), RestoreLabeld("pred", ref_key="image")]

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        ext = normalise_extension(extension or data.get("result_extension"))
        label = data["pred"]
        if not data.get("result_write_to_file", True):
            result = {"label_names": dict(self.task.labels), "model": self.model_info()}
            if data.get("inference"):
                result["inference"] = data["inference"]
            return label, result
        path = write_label(label, data["pred_affine"], ext, dict(self.task.labels))
        result = {
            "label_names": dict(self.task.labels),
            "model": self.model_info(),
            "voxels": {name: int((label == value).sum()) for name, value in self.task.labels.items()},
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
        request_flag(request, "fast_path", self.fast_path.enabled)

    def __call__(self, request, callbacks=None):
        self.check_once(request)
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
