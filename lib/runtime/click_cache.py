"""What an interactive session keeps between clicks, per image and model, in an LRU cache bounded in bytes.

A click changes the guidance only near itself, so the next answer needs the preprocessed volume (the model
grid), the class probabilities of the last answer and the label last sent; everything else is recomputed only
where the click can change it (:mod:`lib.infers.interactive`). The key is the model checksum and the image
file's identity (real path, modification time, size), so a new model or a changed file starts afresh.
``--conf click_cache_mb`` bounds the total (default 1024 MB: about eight 512 x 512 x 200 CTs); the least
recently used image goes first.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from lib.clicks import Clicks

DEFAULT_CACHE_MB = 1024


@dataclass
class ImageState:
    image: torch.Tensor  # (1, X, Y, Z) float32: the preprocessed image on the model grid
    model_affine: np.ndarray  # model voxel -> world
    input_affine: np.ndarray  # input voxel -> world
    input_shape: tuple[int, int, int]
    scores: torch.Tensor  # (C, X, Y, Z) float16 class probabilities of the last answer
    clicks: Clicks  # model-grid clicks the scores answer
    label: np.ndarray  # uint8 label on the input grid, as last sent
    first_seconds: float = 0.0  # what the automatic pass of this image cost
    hu: np.ndarray | None = None  # the CT on the input grid, kept only where the boundary refiner works on it
    first_refined: int = 0  # voxels the boundary refiner changed in the automatic answer

    @property
    def nbytes(self) -> int:
        return int(self.image.element_size() * self.image.numel() + self.scores.element_size() * self.scores.numel()
                   + self.label.nbytes + (self.hu.nbytes if self.hu is not None else 0))


def image_key(path: str, checksum: str | None) -> tuple:
    st = os.stat(path)
    return (checksum, os.path.realpath(path), st.st_mtime_ns, st.st_size)


class StateCache:
    """LRU of :class:`ImageState` by total bytes; thread-safe."""

    def __init__(self, max_mb: float = DEFAULT_CACHE_MB):
        self.max_bytes = int(float(max_mb) * (1 << 20))
        self._items: OrderedDict[tuple, ImageState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> ImageState | None:
        with self._lock:
            state = self._items.get(key)
            if state is not None:
                self._items.move_to_end(key)
            return state

    def put(self, key: tuple, state: ImageState) -> None:
        with self._lock:
            self._items.pop(key, None)
            if state.nbytes > self.max_bytes:
                return  # larger than the whole cache: answered, not kept
            self._items[key] = state
            while self.total_bytes() > self.max_bytes and len(self._items) > 1:
                self._items.popitem(last=False)

    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
