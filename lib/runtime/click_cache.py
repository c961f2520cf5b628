"""What the interactive model keeps between requests: per image one *base*, per click set a *click state*, all in
one LRU bounded in bytes.

An interactive answer is a function of the image, the model and the prompts a request sends - never of who
clicked before on the same image (two annotators on one image, or one Slicer ``client_id`` shared by everybody,
must not steer each other's answers). So the cache is keyed by what the answer depends on:

* the **base** of an image (key: model checksum and the image file's identity - real path, modification time,
  size - so a new model or a changed file starts afresh): the preprocessed volume on the model grid, the two
  affines, the automatic answer's class probabilities and label, and the boundary refiner's copy of the CT in
  HU where it works on this image;
* a **click state** per *set* of clicks on that base (input-grid voxel indices with their class): the class
  probabilities and the label that answer exactly that set, without a client label - kept as the boxes in which
  they differ from the base (the windows its clicks ran, the label voxels they rewrote), so a state costs a
  fraction of a whole volume.

A request with click set S starts from the state of the **largest cached subset** T of S (ties: the smallest
set in sorted order, so the choice never depends on which request came first; the base when no click state
fits) and runs only the clicks of S \\ T (:mod:`lib.infers.interactive`); S itself cached answers at once, so
taking a click back returns exactly the earlier answer. Annotators clicking different points never see each
other's states: the largest subset of one annotator's clicks is that annotator's own previous request.

**Eviction.** ``--conf click_cache_mb`` (default 1024 MB) bounds bases and click states together, least
recently used first (using a click state also refreshes its base; an evicted base takes its click states with
it, as they cannot be used without its volume). When the state of a previous request was evicted, the next
request starts from the largest subset still cached (or the base) and runs one window per click missing from
it: correct, but a few windows dearer, and - since a click's window sees the guidance of all clicks then present
- the answer may differ slightly from the one the evicted chain would have given. An image whose base alone
exceeds the cache is answered but not kept (each request runs the automatic pass again).

A client's own label (the ``label`` upload) is never stored here: the states hold the label-free answers, and a
request with a label writes its clicks' regions into a copy of the label it sent.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

DEFAULT_CACHE_MB = 1024

ClickSet = frozenset  # of (class value, (i, j, k)) in input-grid voxel indices


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else int(t.element_size() * t.numel())


@dataclass
class ImageBase:
    """What every request on one image and model shares: the automatic answer and what a click window needs."""

    image: torch.Tensor  # (1, X, Y, Z) float32: the preprocessed image on the model grid
    model_affine: np.ndarray  # model voxel -> world
    input_affine: np.ndarray  # input voxel -> world
    input_shape: tuple[int, int, int]
    scores: torch.Tensor  # (C, X, Y, Z) float16 class probabilities of the automatic answer
    label: np.ndarray  # uint8 automatic answer on the input grid
    first_seconds: float = 0.0  # what the automatic pass of this image cost
    hu: np.ndarray | None = None  # the CT on the input grid, kept only where the boundary refiner works on it
    first_refined: int = 0  # voxels the boundary refiner changed in the automatic answer

    @property
    def nbytes(self) -> int:
        return (_tensor_bytes(self.image) + _tensor_bytes(self.scores) + int(self.label.nbytes)
                + (int(self.hu.nbytes) if self.hu is not None else 0))


Box = tuple  # of 3 slices; None: empty


def union_box(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


@dataclass
class ClickState:
    """The answer to one click set on a base, kept as what differs from the base: the class probabilities in a box
    of the model grid and the label in a box of the input grid (outside them, the base's). Never modified once
    cached."""

    clicks: ClickSet
    scores_box: Box | None
    scores_patch: torch.Tensor | None  # (C, box) float16
    label_box: Box | None
    label_patch: np.ndarray | None  # uint8

    @classmethod
    def of(cls, clicks: ClickSet, scores: torch.Tensor, scores_box: Box | None, label: np.ndarray,
           label_box: Box | None) -> "ClickState":
        """The state of full ``scores`` and ``label`` that equal the base's outside the given boxes."""
        return cls(clicks, scores_box, scores[(slice(None), *scores_box)].clone() if scores_box else None,
                   label_box, label[label_box].copy() if label_box else None)

    def scores_on(self, base: ImageBase) -> torch.Tensor:
        """The full class probabilities (a new tensor)."""
        out = base.scores.clone()
        if self.scores_box:
            out[(slice(None), *self.scores_box)] = self.scores_patch
        return out

    def label_on(self, base: ImageBase) -> np.ndarray:
        """The full label (a new array)."""
        out = base.label.copy()
        if self.label_box:
            out[self.label_box] = self.label_patch
        return out

    @property
    def nbytes(self) -> int:
        return _tensor_bytes(self.scores_patch) + (int(self.label_patch.nbytes) if self.label_patch is not None else 0)


def image_key(path: str, checksum: str | None) -> tuple:
    st = os.stat(path)
    return (checksum, os.path.realpath(path), st.st_mtime_ns, st.st_size)


def click_set(pairs: Iterable[tuple[int, tuple]]) -> ClickSet:
    return frozenset((int(c), tuple(int(v) for v in p)) for c, p in pairs)


def _order(s: ClickSet) -> tuple:
    return tuple(sorted(s))


class StateCache:
    """Bases and click states in one LRU by total bytes; thread-safe. Entries are never modified once put."""

    def __init__(self, max_mb: float = DEFAULT_CACHE_MB):
        self.max_bytes = int(float(max_mb) * (1 << 20))
        self._bases: dict[tuple, ImageBase] = {}
        self._states: dict[tuple, dict[ClickSet, ClickState]] = {}
        self._lru: OrderedDict[tuple, int] = OrderedDict()  # (key, None) for a base, (key, clicks) for a state
        self._bytes = 0
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}

    # ---- bases -----------------------------------------------------------------------------------------
    def base(self, key: tuple) -> ImageBase | None:
        with self._lock:
            base = self._bases.get(key)
            if base is not None:
                self._lru.move_to_end((key, None))
            return base

    def put_base(self, key: tuple, base: ImageBase) -> bool:
        """Keep ``base`` (replacing any earlier one and its states); False when it alone exceeds the cache."""
        with self._lock:
            if (key, None) in self._lru:
                self._drop((key, None))
            self._building.pop(key, None)  # its first pass is over (waiters hold the lock itself)
            if base.nbytes > self.max_bytes:
                return False
            self._bases[key] = base
            self._states[key] = {}
            self._add((key, None), base.nbytes)
            self._shrink(keep={(key, None)})
            return True

    def building(self, key: tuple) -> threading.Lock:
        """A lock per image key: concurrent first requests of one image run its automatic pass once."""
        with self._lock:
            return self._building.setdefault(key, threading.Lock())

    # ---- click states ----------------------------------------------------------------------------------
    def start(self, key: tuple, clicks: ClickSet) -> ClickState | None:
        """The cached state of the largest subset of ``clicks`` (ties: the first in sorted order), or None when
        none is cached (start from the base). Refreshes it and its base."""
        with self._lock:
            states = self._states.get(key)
            if not states:
                return None
            state = states.get(clicks)
            if state is None:
                fits = [s for s in states if s <= clicks]
                if not fits:
                    return None
                state = states[min(fits, key=lambda s: (-len(s), _order(s)))]
            self._lru.move_to_end((key, None))
            self._lru.move_to_end((key, state.clicks))
            return state

    def put_state(self, key: tuple, state: ClickState) -> bool:
        """Keep ``state`` under its base (which must be cached); False when it is not kept."""
        with self._lock:
            if key not in self._bases or not state.clicks:
                return False
            item = (key, state.clicks)
            if item in self._lru:
                self._drop(item)
            self._lru.move_to_end((key, None))
            self._states[key][state.clicks] = state
            self._add(item, state.nbytes)
            self._shrink(keep={(key, None), item})
            if self._bytes > self.max_bytes:  # its base and it do not fit together: keep the base
                self._drop(item)
                return False
            return True

    # ---- bookkeeping -----------------------------------------------------------------------------------
    def _add(self, item: tuple, nbytes: int) -> None:
        self._lru[item] = nbytes
        self._bytes += nbytes

    def _drop(self, item: tuple) -> None:
        key, clicks = item
        self._bytes -= self._lru.pop(item)
        if clicks is None:  # a base takes its click states with it
            self._bases.pop(key, None)
            for s in self._states.pop(key, {}):
                self._bytes -= self._lru.pop((key, s))
        else:
            self._states.get(key, {}).pop(clicks, None)

    def _shrink(self, keep: set) -> None:
        while self._bytes > self.max_bytes:
            victim = next((item for item in self._lru if item not in keep), None)
            if victim is None:
                return
            self._drop(victim)

    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def click_sets(self, key: tuple) -> list[ClickSet]:
        """The click sets cached for an image (for tests and logs)."""
        with self._lock:
            return sorted(self._states.get(key, {}), key=lambda s: (len(s), _order(s)))

    def __len__(self) -> int:
        """Cached entries: bases and click states."""
        with self._lock:
            return len(self._lru)

    def clear(self) -> None:
        with self._lock:
            self._bases.clear()
            self._states.clear()
            self._lru.clear()
            self._bytes = 0
