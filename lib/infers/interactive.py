"""The interactive (DeepEdit-style) infer task, ``deepedit_<task>``: clicks that steer a DiNTS network.

The network takes the CT and one guidance channel per class, background included (DeepEdit's layout; the
guidance is :func:`lib.clicks.paint_clicks`). MONAI Label's ``deepedit`` type makes the stock 3D Slicer module
show its click tools; with no clicks the answer is an automatic segmentation.

The answer is a function of the image, the model and the prompts the request sends - never of who clicked before
(:mod:`lib.runtime.click_cache`): per image (datastore image or session upload) and model checksum the cache keeps
one *base* (the preprocessed volume, the automatic answer) and per click *set* a state (class probabilities and
label). A request costs:

* **nothing but the checks** when it is bad: the clicks and parameters are checked against the image's header
  (its shape) before any image work, so a label-less click (``null``), a point outside the image or a malformed
  one is a 400 in milliseconds, not after an automatic pass;
* **first request** of an image: load, preprocess, the automatic coarse-to-fine pass (:mod:`lib.runtime.fast_path`,
  guidance all zero), restore to the input grid - as ``dints_pancreas`` - then the boundary refiner
  (:mod:`lib.transforms.boundary_refine`, on images of the voxel spacings it was fitted on) decides the surface
  voxels on the image's own grid;
* **a click set S**: the cached state of the largest cached subset T of S (the base when none) is the start; one
  window of the profile's size centred on each click of S \ T, run with the guidance of *all* clicks of S, its
  probabilities blended into the start's with a weight that is 1 at the click and falls to 0 at the window's edge
  (so nothing jumps at the seam); then only the input voxels whose model-grid class changed, or that lie within
  the guidance's reach of an added click, are resampled and written into the label. The clicked voxels
  themselves always take their click's label (a click is never overruled at the spot where it was placed; around
  it, the network decides), and the refiner decides the surface voxels among those just written. Everything else
  keeps the start's answer - or the client's own label when it sends one (``label`` upload: edits made by hand
  elsewhere survive the click; that label is written into, never cached). S itself cached is answered at once:
  taking a click back answers exactly what that click set answered before, taking every click back the
  automatic segmentation.

Clicks arrive in voxel indices of the image as the client loaded it and go through the image's own geometry
(:func:`lib.clicks.to_model_grid`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferType
from scipy import ndimage

from lib.clicks import Clicks, WithGuidance, click_names, guidance_box, parse_clicks, sigma_voxels, to_model_grid
from lib.errors import InputError
from lib.infers.served_task import ServedTask
from lib.transforms.preprocessing import ct_preprocessing
from lib.profiles import Profile
from lib.prompts.label_edit import apply_clicks
from lib.prompts.walker import WalkerSettings
from lib.datastore.label_check import read_geometry
from lib.runtime.click_cache import ClickState, ImageBase, StateCache, click_set, image_key, union_box
from lib.runtime.fast_path import configure_threads, fast_pass
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask
from lib.transforms.boundary_refine import BoundaryRefiner
from lib.transforms.components import bounding_slices, drop_small_components
from lib.transforms.restore import input_box, resample_argmax, restore_label
from lib.transforms.scores import class_argmax
from lib.transforms.writer import normalise_extension, write_label

logger = logging.getLogger(__name__)

CLICK_SCOPES = ("connected", "window")
CLICK_MODELS = ("walker", "network")


def connected_to(changed: np.ndarray, seed: tuple[slice, ...]) -> np.ndarray:
    """The voxels of ``changed`` (26-connected) in a component that reaches into the ``seed`` box, grown by one
    voxel: what a click may change when its effect has to be connected to it."""
    comps, n = ndimage.label(changed, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros_like(changed)
    ids = np.unique(comps[seed])
    keep = np.isin(comps, ids[ids > 0])
    return ndimage.binary_dilation(keep, structure=np.ones((3, 3, 3), bool)) if keep.any() else keep


def click_weight(roi: Sequence[int], lo: Sequence[int], centre: Sequence[float]) -> torch.Tensor:
    """Blending weight of a click window [lo, lo + roi): a Gaussian (sigma roi/4) around the click, shifted and
    scaled to be 1 at the click and 0 from half a window away."""
    axes = []
    for a in range(3):
        sigma = roi[a] / 4.0
        d = torch.arange(lo[a], lo[a] + roi[a], dtype=torch.float32) - float(centre[a])
        edge = float(np.exp(-0.5 * (roi[a] / 2.0 / sigma) ** 2))
        axes.append(((torch.exp(-0.5 * (d / sigma) ** 2) - edge) / (1.0 - edge)).clamp(min=0.0))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def window_at(centre: Sequence[float], roi: Sequence[int], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """[lo, lo + roi) centred on ``centre``, moved inside the grid (axes shorter than the window start at 0)."""
    lo = np.floor(np.asarray(centre, dtype=np.float64) - np.asarray(roi) / 2.0 + 0.5).astype(int)
    lo = np.clip(lo, 0, np.maximum(np.asarray(shape) - np.asarray(roi), 0))
    return lo, lo + np.asarray(roi)


def crop_padded(volume: torch.Tensor, lo: Sequence[int], hi: Sequence[int]) -> torch.Tensor:
    """volume[:, lo:hi] with zeros where [lo, hi) runs past the grid (a grid smaller than the window)."""
    out = volume.new_zeros((volume.shape[0], *(int(h) - int(l) for l, h in zip(lo, hi))))
    src_hi = [min(int(h), s) for h, s in zip(hi, volume.shape[1:])]
    out[:, : src_hi[0] - lo[0], : src_hi[1] - lo[1], : src_hi[2] - lo[2]] = volume[:, lo[0]:src_hi[0], lo[1]:src_hi[1], lo[2]:src_hi[2]]
    return out


class InteractiveInfer(ServedTask):
    """MONAI Label ``deepedit`` task: automatic segmentation plus clicks per label (see the module docstring)."""

    def __init__(self, served: ServedModel, task: SegmentationTask, profile: Profile, sigma_mm: float = 5.0,
                 cache_mb: float = 1024, click_scope: str = "connected", refiner: BoundaryRefiner | None = None,
                 description: str | None = None, click_model: str = "walker",
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
        if base is not None:
            return base.input_shape
        if not os.path.isfile(path):
            return None
        try:
            shape = read_geometry(path).shape
        except Exception:
            return None
        return tuple(int(v) for v in shape) if len(shape) == 3 else None

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
            run, scores_box, label_box = self._apply_clicks(base, scores, clicks_in, added, labels, net, device)
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
                               min_component_fraction=self.min_component_fraction, coarse_forward=auto,
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

    def _apply_clicks(self, base: ImageBase, scores: torch.Tensor, clicks_in: Clicks, added: list, labels: list,
                      net, device: str) -> dict:
        """Run one window per added click (input-grid ``(class, ijk)`` pairs) with the guidance of all clicks,
        blend it into ``scores`` (the start state's copy, changed in place), and re-restore into each of
        ``labels`` (in place) only what can have changed (then refine the boundary there, leaving the clicked
        voxels as clicked)."""
        t0 = time.time()
        roi = [int(r) for r in self.profile.roi_size]
        shape = base.image.shape[1:]
        c = self.task.num_classes
        sigma = sigma_voxels(self.sigma_mm, self.profile.spacing)
        clicks = to_model_grid(clicks_in, base.input_affine, base.model_affine, shape)
        new_points = to_model_grid(Clicks.from_pairs(added), base.input_affine, base.model_affine, shape)
        centres = [p for _, pts in sorted(new_points.points.items()) for p in pts]
        boxes = [window_at(p, roi, shape) for p in centres]
        inputs = []
        for lo, hi in boxes:
            img = crop_padded(base.image, lo, hi)
            inputs.append(torch.cat([img, guidance_box(clicks, c, lo, hi, sigma)], 0))
        outs = []
        with torch.no_grad():
            batch = max(1, int(self.profile.sw_batch_size))
            for i in range(0, len(inputs), batch):
                x = torch.stack(inputs[i:i + batch]).to(device)
                outs.append(torch.softmax(net(x).float(), 1).cpu())
        outs = torch.cat(outs)
        t_net = time.time() - t0
        changed_mask = np.zeros(shape, dtype=bool)
        scores_box = None  # where ``scores`` are written
        reach = np.ceil(3 * sigma).astype(int)  # the click's own neighbourhood is always re-restored
        for (lo, hi), centre, out in zip(boxes, centres, outs):
            hi_c = np.minimum(hi, shape)
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi_c))
            valid = tuple(slice(0, int(b - a)) for a, b in zip(lo, hi_c))
            w = click_weight(roi, lo, centre)[valid]
            old = scores[(slice(None), *sl)].float()
            new = w * out[(slice(None), *valid)] + (1.0 - w) * old
            p = np.round(centre).astype(int)
            near = tuple(slice(max(0, int(p[a] - reach[a])), min(int(shape[a]), int(p[a] + reach[a] + 1))) for a in range(3))
            diff = (class_argmax(new) != class_argmax(old)).numpy()
            if self.click_scope == "connected":  # changes not connected to the click are not its doing: undo them
                local = tuple(slice(n.start - int(a), n.stop - int(a)) for n, a in zip(near, lo))
                keep = connected_to(diff, local)
                keep[local] = True
                new = torch.where(torch.from_numpy(keep)[None], new, old)
                diff &= keep
            scores[(slice(None), *sl)] = new.half()
            scores_box = union_box(scores_box, sl)
            changed_mask[sl] |= diff
            changed_mask[near] = True
        # the clicked voxel itself always takes its click's label (the 8 model voxels its trilinear sample reads)
        for cls, pts in clicks.points.items():
            for p in pts:
                lo = np.clip(np.floor(p).astype(int), 0, np.asarray(shape) - 1)
                sl = tuple(slice(int(a), min(int(a) + 2, int(n))) for a, n in zip(lo, shape))
                scores[(slice(None), *sl)] = 0
                scores[(cls, *sl)] = 1
                scores_box = union_box(scores_box, sl)
                changed_mask[sl] = True
        written = np.zeros(base.input_shape, dtype=bool) if base.hu is not None else None  # only where the refiner works
        voxels, label_box = self._restore_changed(base, scores, changed_mask, labels, written)
        stats = {"windows": len(boxes), "network_seconds": round(t_net, 3), "restored_voxels": voxels}
        if written is not None and voxels:
            clicked = np.zeros(base.input_shape, dtype=bool)
            for pts in clicks_in.points.values():
                for p in pts:
                    clicked[tuple(int(v) for v in p)] = True
            for label in labels:  # the answer's own refinement is the one reported
                stats["refined_voxels"] = self.refiner.refine(base.hu, label, base.input_affine, editable=written,
                                                              keep=clicked)  # only among the voxels just written
        return stats, scores_box, label_box

    def _restore_changed(self, base: ImageBase, scores: torch.Tensor, changed: np.ndarray, labels: list,
                         written: np.ndarray | None = None) -> tuple[int, tuple | None]:
        """Write into each of ``labels`` (input grid) the new class (from ``scores``) of every input voxel whose
        nearest model voxel changed (and mark them in ``written`` when given); the voxels written and a box around
        them (None: none)."""
        box = bounding_slices(changed, margin=1)
        if box is None:
            return 0, None
        label_box = None
        grown = ndimage.binary_dilation(changed[box], structure=np.ones((3, 3, 3), bool))
        comps, _ = ndimage.label(grown)
        to_input = np.linalg.inv(base.input_affine) @ base.model_affine  # model index -> input index
        to_model = np.linalg.inv(base.model_affine) @ base.input_affine
        shape_in = np.asarray(base.input_shape)
        mask_full = np.zeros(changed.shape, dtype=bool)
        mask_full[box] = grown
        done = 0
        for sl in ndimage.find_objects(comps):
            lo_m = np.array([b.start + s.start for b, s in zip(box, sl)], dtype=np.float64)
            hi_m = np.array([b.start + s.stop for b, s in zip(box, sl)], dtype=np.float64)
            found = input_box(lo_m, hi_m, to_input, shape_in, base.input_affine)
            if found is None:
                continue
            lo, hi, sub_affine = found
            # the scores of this component's box (+2 voxels: the trilinear support), as their own small grid
            s_lo = np.maximum(lo_m.astype(int) - 2, 0)
            s_hi = np.minimum(hi_m.astype(int) + 2, changed.shape)
            shift = np.eye(4)
            shift[:3, 3] = s_lo
            sub = scores[:, s_lo[0]:s_hi[0], s_lo[1]:s_hi[1], s_lo[2]:s_hi[2]]
            new = resample_argmax(sub, base.model_affine @ shift, sub_affine, tuple(int(v) for v in hi - lo))
            # which of these input voxels fall (nearest) on a changed model voxel
            ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
            pts = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
            m = np.rint((to_model @ pts)[:3]).astype(int)
            for a in range(3):
                np.clip(m[a], 0, changed.shape[a] - 1, out=m[a])
            hit = mask_full[m[0], m[1], m[2]].reshape(ii.shape)
            values = new[hit]
            region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            for label in labels:
                label[region][hit] = values
            if written is not None:
                written[region] |= hit
            label_box = union_box(label_box, region)
            done += int(hit.sum())
        return done, label_box
