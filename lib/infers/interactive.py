"""The interactive infer task ``deepedit_<task>``: the network's automatic answer, corrected by points per label.

MONAI Label's ``deepedit`` type makes the stock 3D Slicer module show its click tools; with no points the answer
is the automatic segmentation. Points arrive as ``{label name: [[i, j, k], ...]}`` in voxel indices of the image
as the client loaded it (:func:`lib.clicks.parse_clicks`: checked against the header's shape before any image
work) and are answered, by ``click_model``:

* ``network`` (default): :func:`lib.infers.network_clicks.apply_network_clicks` (one DiNTS window per new point,
  DeepEdit guidance channels), from the cached state of the largest subset of the points answered before;
* ``walker``: :func:`lib.prompts.label_edit.apply_clicks` on the image's own grid, from the automatic answer, with
  every point of the request (the image decides where an organ ends).

The answer is a function of the image, the model and the points the request sends, never of who clicked before
(:mod:`lib.runtime.click_cache`): per image and model checksum one *base* (the preprocessed volume, the automatic
answer, the CT on its own grid) and per point set its answer. A point set answered before is answered at once,
so taking a point back answers what the smaller set answered. A client's own ``label`` upload is written into
(its edits away from the points survive), never cached.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.clicks import Clicks, WithGuidance, click_names, parse_clicks
from lib.errors import InputError
from lib.infers.network_clicks import apply_network_clicks
from lib.infers.served_task import ServedTask
from lib.transforms.preprocessing import ct_preprocessing
from lib.profiles import Profile
from lib.prompts.label_edit import apply_clicks
from lib.prompts.walker import WalkerSettings
from lib.datastore.label_files import header_shape
from lib.runtime.click_cache import ClickState, ImageBase, StateCache, click_set, image_key, union_box
from lib.runtime.fast_path import configure_threads, fast_pass
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask
from lib.transforms.boundary_refine import BoundaryRefiner
from lib.transforms.components import bounding_slices, drop_small_components
from lib.transforms.restore import restore_label
from lib.transforms.writer import normalise_extension, write_label

logger = logging.getLogger(__name__)

CLICK_SCOPES = ("connected", "window")
CLICK_MODELS = ("walker", "network")


class InteractiveInfer(ServedTask):
    """MONAI Label ``deepedit`` task: automatic segmentation plus clicks per label (see the module docstring)."""

    def __init__(self, served: ServedModel, task: SegmentationTask, profile: Profile, sigma_mm: float = 5.0,
                 cache_mb: float = 1024, click_scope: str = "connected", refiner: BoundaryRefiner | None = None,
                 description: str | None = None, click_model: str = "network",
                 walker: WalkerSettings | None = None, **options):
        """``click_scope``: ``connected`` (a click changes only the region of changed class connected to it) or
        ``window`` (everything its blended window changes). ``refiner``: the boundary refiner applied to what the
        server decides, on images of the voxel spacings it was fitted on (None: off). ``options``: ``limits``,
        ``fast_path``, ``num_threads``, ``min_component_fraction`` (see :class:`ServedTask`)."""
        if click_model not in CLICK_MODELS:
            raise ValueError(f"click_model must be one of {', '.join(CLICK_MODELS)}, not {click_model!r}")
        if click_scope not in CLICK_SCOPES:
            raise ValueError(f"click_scope must be one of {', '.join(CLICK_SCOPES)}, not {click_scope!r}")
        super().__init__(
            served, task, profile, InferType.DEEPEDIT,
            description or f"Interactive DiNTS (DeepEdit-style clicks) for the {task.description}",
            config={"click_model": click_model, "guidance_sigma_mm": float(sigma_mm), "click_scope": click_scope,
                    "boundary_refiner": refiner.checksum if refiner is not None else None}, **options,
        )
        self.refiner = refiner
        self.click_model = click_model
        self.walker = walker or WalkerSettings()
        self.click_scope = click_scope
        self.sigma_mm = float(sigma_mm)
        self.cache = StateCache(cache_mb)

    def info(self) -> dict[str, Any]:
        info = super().info()
        names = click_names(self.task.labels)
        # background listed as DeepEdit's apps do: the stock Slicer module keeps click points per label it sees
        info["labels"] = names
        info["clicks"] = {"labels": list(names), "format": "{label: [[i, j, k], ...]} voxel indices"}
        return info

    def warm_up(self, device: str = "cpu", wait: bool = False, timeout: float | None = None):
        self.served.network(device)

    def pre_transforms(self, data=None):
        return ct_preprocessing(self.task, self.profile.spacing, ("image",), loader="checked", limits=self.limits)

    def post_transforms(self, data=None):
        return []  # the label is restored region by region in __call__

    # ---- one request -----------------------------------------------------------------------------
    def check_request(self, request: dict) -> Clicks:
        """Refuse a bad request before any image work (and, in the app, before waiting for the inference slot):
        the result extension, and the clicks checked against the image's shape read from its header (the cached
        base's when there is one). Returns the clicks (input voxel indices)."""
        self._extension(request)
        path = request.get("image")
        if not isinstance(path, str) or not os.path.exists(path):
            raise InputError("image not found", 404)
        return parse_clicks(request, self.task.labels, self._input_shape(path))

    def _input_shape(self, path: str) -> tuple[int, ...] | None:
        """The input grid's shape without reading the voxels: the cached base's, else the file's header (None for
        a DICOM series folder or an unreadable header: the loader then says what is wrong, and the bounds of the
        clicks are checked once the image is loaded)."""
        base = self.cache.base(image_key(path, self.served.checksum()))
        return base.input_shape if base is not None else header_shape(path)

    def __call__(self, request, callbacks=None):
        start = time.time()
        self.check_once(request)  # before any image work (once: the app may have run it before the inference slot)
        configure_threads(self.num_threads)
        device = "cuda" if str(request.get("device", "cpu")).startswith("cuda") and torch.cuda.is_available() else "cpu"
        ext = self._extension(request)
        path = request["image"]
        net = self.served.network(device)  # 503 without weights
        client = self._client_label(request["label"], path) if request.get("label") else None  # 422 before any work
        key = image_key(path, self.served.checksum())
        base, cached = self._base(key, path, net, device)
        clicks_in = parse_clicks(request, self.task.labels, base.input_shape)  # the loaded grid's bounds (a DICOM series)
        wanted = click_set(clicks_in.pairs())
        state = self.cache.start(key, wanted) if wanted else None
        have = state.clicks if state is not None else frozenset()
        added = sorted(wanted - have)
        stats = {"cached": cached, "clicks": clicks_in.count, "from_clicks": len(have), "changed_clicks": len(added),
                 "windows": 0}
        if not added:  # this very click set is cached (or none was sent): its answer as it was
            label = client if client is not None else (state.label_on(base) if state is not None else base.label.copy())
        elif self.click_model == "walker":  # a function of the whole click set, from the automatic answer
            label = client if client is not None else base.label.copy()
            t0 = time.time()
            walked = apply_clicks(label, base.hu, nib.affines.voxel_sizes(base.input_affine), clicks_in.points,
                                  self.walker)
            stats.update(walker={str(k): v for k, v in walked.items()}, walker_seconds=round(time.time() - t0, 3))
            if client is None:
                changed = bounding_slices(label != base.label, margin=0)
                self.cache.put_state(key, ClickState.of(wanted, base.scores, None, label, changed))
        else:
            scores = state.scores_on(base) if state is not None else base.scores.clone()
            own = state.label_on(base) if state is not None else base.label.copy()
            labels = [own] + ([client] if client is not None else [])
            run, scores_box, label_box = apply_network_clicks(
                base, scores, clicks_in, added, labels, net, device, profile=self.profile,
                num_classes=self.task.num_classes, sigma_mm=self.sigma_mm, click_scope=self.click_scope,
                refiner=self.refiner)
            stats.update(run)
            if state is not None:  # what differs from the base: what differed before and what this request wrote
                scores_box, label_box = union_box(state.scores_box, scores_box), union_box(state.label_box, label_box)
            self.cache.put_state(key, ClickState.of(wanted, scores, scores_box, own, label_box))
            label = labels[-1]
        stats["seconds"] = round(time.time() - start, 3)
        if not cached:
            stats["first_pass_seconds"] = round(base.first_seconds, 3)
            stats["first_pass_refined_voxels"] = base.first_refined
        logger.info(f"Interactive inference: {stats}")
        result = {"label_names": dict(self.task.labels), "model": self.model_info(), "inference": stats}
        if not request.get("result_write_to_file", True):
            return label, result
        out = write_label(label, base.input_affine, ext, dict(self.task.labels))
        result["voxels"] = {name: int((label == value).sum()) for name, value in self.task.labels.items()}
        return out, result

    def _extension(self, request) -> str:
        try:
            return normalise_extension(request.get("result_extension"))
        except ValueError as exc:
            raise InputError(str(exc), 400) from exc

    def _base(self, key: tuple, path: str, net: torch.nn.Module, device: str) -> tuple[ImageBase, bool]:
        """The image's base from the cache, or from its automatic pass (run once for concurrent first requests)."""
        base = self.cache.base(key)
        if base is not None:
            return base, True
        with self.cache.building(key):
            base = self.cache.base(key)
            if base is not None:
                return base, True
            base = self._first_pass(path, net, device)
            self.cache.put_base(key, base)
            return base, False

    def _first_pass(self, path: str, net: torch.nn.Module, device: str) -> ImageBase:
        """Load + preprocess + the automatic pass (guidance zero) + restore: the base the clicks start from."""
        t0 = time.time()
        load, *rest = self.pre_transforms()  # LoadCTd first (ct_preprocessing's "checked" loader)
        data = load({"image": path})
        input_affine = np.asarray(data["image_input_affine"], dtype=np.float64)
        hu = None
        if self.click_model == "walker" or (
                self.refiner is not None and self.refiner.accepts(nib.affines.voxel_sizes(input_affine))):
            hu = np.array(data["image"], dtype=np.float32)  # the CT on its own grid, for the refiner (a copy)
        data = Compose(rest)(data)
        image = data["image"]
        model_affine = np.asarray(image.affine, dtype=np.float64)
        image = image.as_tensor().float() if hasattr(image, "as_tensor") else torch.as_tensor(image).float()
        auto = WithGuidance(net, self.task.num_classes)
        c = self.task.num_classes
        with torch.no_grad():
            result = fast_pass(image, auto, self.profile.roi_size, self.profile.sw_batch_size, self.profile.sw_overlap,
                               self.profile.spacing, self.fast_path, any_shape=True, out_channels=c,
                               min_component_fraction=self.min_component_fraction,
                               device=torch.device("cpu"), sw_device=torch.device(device) if device != "cpu" else None)
        box = torch.softmax(result.scores.float().cpu(), 0)
        box, _ = drop_small_components(box, self.min_component_fraction)
        scores = torch.zeros((c, *image.shape[1:]), dtype=torch.float16)
        scores[0] = 1.0  # outside the fast path's box: background
        lo = result.offset
        hi = [o + s for o, s in zip(lo, box.shape[1:])]
        scores[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box.half()
        label = restore_label(box, lo, model_affine, input_affine, data["image_input_shape"])
        refined = 0
        if self.refiner is not None and self.refiner.accepts(nib.affines.voxel_sizes(input_affine)):
            refined = self.refiner.refine(hu, label, input_affine)
        return ImageBase(image=image, model_affine=model_affine, input_affine=input_affine,
                         input_shape=tuple(int(s) for s in data["image_input_shape"]), scores=scores,
                         label=label, first_seconds=time.time() - t0, hu=hu, first_refined=refined)

    def _client_label(self, path: str, image_path: str) -> np.ndarray:
        """The label the client sent (its current segmentation), checked as a submitted label is (422 unless it is
        on the image's voxel grid with this task's values; :func:`lib.datastore.label_check.check_label`)."""
        from lib.datastore.label_check import check_label

        return check_label(path, image_path, dict(self.task.labels)).voxels()
