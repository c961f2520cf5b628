"""Class-agnostic prompt tasks: segment the structure the annotator points at, on any organ, from the image's own
evidence (:mod:`lib.prompts.walker`; no network, so it needs no weights and no training).

* ``prompt_organ`` (MONAI Label type ``deepgrow``): the stock Slicer module's *SmartEdit* points
  (``foreground`` / ``background`` of the current segment) and its ROI box (``roi``); the answer is the segment
  (value 1), which the module puts into the current segment;
* ``prompt_scribbles`` (type ``scribbles``): the Slicer *Scribbles* strokes; the selected segment as it was drawn
  is the starting point, the foreground strokes add to it and the background strokes cut it.

The image is read once and kept (``cache_images`` of them), so a later prompt costs the walk alone; the first
prompt on a new image needs no whole-volume pass either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import nibabel as nib
import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from scipy import ndimage

from lib.datastore.label_files import Geometry, header_shape, read_geometry, read_voxels
from lib.datastore.label_check import geometry_problem
from lib.errors import InputError
from lib.prompts.requests import parse_point_prompts, parse_box, scribble_ids
from lib.prompts.walker import Prompts, WalkerSettings, segment
from lib.transforms.load import InputLimits, LoadCTd
from lib.transforms.writer import normalise_extension, write_label

logger = logging.getLogger(__name__)


class ImageCache:
    """The last few images read (HU on their own grid, affine), keyed by path and modification time."""

    def __init__(self, size: int, limits: InputLimits):
        self.size, self.loader = max(1, int(size)), LoadCTd("image", limits=limits)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = self.loader({"image": path})
        item = (np.asarray(data["image"], dtype=np.float32), np.asarray(data["image_input_affine"], dtype=np.float64))
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


class PromptInfer(InferTask):
    """One class-agnostic prompt task (see the module docstring)."""

    def __init__(self, infer_type, description: str, limits: InputLimits | None = None,
                 settings: WalkerSettings | None = None, cache_images: int = 2):
        super().__init__(type=infer_type, labels=None, dimension=3, description=description,
                         config={"result_extension": ".nii.gz"})
        self.settings = settings or WalkerSettings()
        self.images = ImageCache(cache_images, limits or InputLimits())

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = []  # any organ: the client's current segment names the answer
        info["prompts"] = (["foreground", "background", "roi"] if self.type == InferType.DEEPGROW
                           else ["label_info", "foreground_scribbles", "background_scribbles", "roi"])
        return info

    def __call__(self, request, callbacks=None):
        start = time.time()
        ext = self._extension(request)
        path = request.get("image")
        if not isinstance(path, str) or not os.path.exists(path):
            raise InputError("image not found", 404)
        shape = header_shape(path)
        if self.type == InferType.DEEPGROW:
            prompts = parse_point_prompts(request, shape)  # 400 before the image is read
            hu, affine = self.images.get(path)
            prompts = parse_point_prompts(request, hu.shape)
        else:
            ids = scribble_ids(request)
            if not request.get("label"):
                raise InputError("scribbles need the label file of the strokes (sent with the request)", 400)
            hu, affine = self.images.get(path)
            prompts = self._scribbles(request, ids, hu, affine)
        mask = segment(hu, nib.affines.voxel_sizes(affine), prompts, self.settings)
        name = str(request.get("label") if self.type == InferType.DEEPGROW and isinstance(request.get("label"), str)
                   else request.get("selected_label_name") or "foreground")
        result = {"label_names": {name: 1}, "prompt": {"voxels": int(mask.sum()), "seconds": round(time.time() - start, 3)}}
        logger.info(f"Prompt inference ({self.type}): {result['prompt']}")
        label = mask.astype(np.uint8)
        if not request.get("result_write_to_file", True):
            return label, result
        return write_label(label, affine, ext, {name: 1}), result

    def _scribbles(self, request, ids, hu: np.ndarray, affine: np.ndarray) -> Prompts:
        fg_id, bg_id, selected_id = ids
        path = request["label"]
        problem = geometry_problem(read_geometry(path), Geometry(tuple(hu.shape), affine))
        if problem:
            raise InputError(f"the scribbles label does not fit the image: {problem}", 422)
        strokes = read_voxels(path)
        fg = strokes == fg_id if fg_id is not None else np.zeros(hu.shape, bool)
        bg = strokes == bg_id if bg_id is not None else np.zeros(hu.shape, bool)
        if selected_id is not None and selected_id not in (fg_id, bg_id):
            # the segment as drawn is evidence, but not a part the annotator disputes: a part a background stroke
            # touches (the module's export writes strokes over the segment, so "touches" is "next to") is dropped
            # when no foreground stroke touches it, and left to the strokes alone when one does
            drawn = strokes == selected_id
            full = np.ones((3, 3, 3), bool)
            comps, _ = ndimage.label(drawn, structure=full)
            touched = lambda m: np.unique(comps[ndimage.binary_dilation(m, structure=full) & drawn])  # noqa: E731
            disputed = np.isin(comps, touched(bg)[touched(bg) > 0]) if bg.any() else np.zeros(hu.shape, bool)
            fg |= ndimage.binary_erosion(drawn & ~disputed, structure=full)
        if not fg.any():
            raise InputError("no foreground: draw a foreground scribble on the structure (or select its segment)", 400)
        return Prompts(foreground=fg, background=bg, box=parse_box(request.get("roi"), hu.shape))

    @staticmethod
    def _extension(request) -> str:
        try:
            return normalise_extension(request.get("result_extension"))
        except ValueError as exc:
            raise InputError(str(exc), 400) from exc


def prompt_tasks(limits: InputLimits | None = None) -> dict[str, PromptInfer]:
    """The app's class-agnostic prompt tasks by name (``--conf prompts false`` leaves them out)."""
    return {
        "prompt_organ": PromptInfer(InferType.DEEPGROW, "Any organ you point at: foreground/background points or a "
                                    "box, segmented from the image's own edges (no network)", limits),
        "prompt_scribbles": PromptInfer(InferType.SCRIBBLES, "Any organ you scribble on: foreground/background "
                                        "strokes correct the selected segment from the image's own edges", limits),
    }
