"""DeepEdit clicks applied to a label through the walker (:mod:`lib.prompts.walker`): per class, what its clicks
and the current answer say, found from the image's edges.

Per class (ascending, so the tumour is decided inside the pancreas, not the other way round):

* a component of the current answer that holds a click of another class (background included) and none of its
  own is the annotator saying "not this" about the part around the click: a stray blob goes whole, a wrong part
  hanging on a larger region goes where the walker, between the click and the region's core, gives it to the
  click (:func:`_disputed_part`); one that holds clicks of both is replaced by the walker's region for the class;
* with clicks of its own, the walker finds the region they point at (every click of another class is a negative
  prompt) and it is added. The network's answer is no evidence for the walker: on real CT a phantom-trained
  network's stray answer would lead it astray, and where the network is right the clicks go to what it missed;
* a class never overwrites a class decided after it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from lib.prompts.walker import Prompts, WalkerSettings, segment
from lib.transforms.components import bounding_slices

FULL = np.ones((3, 3, 3), dtype=bool)


def _components_hit(mask: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(components labelled, the ids of those holding one of ``points``)."""
    comps, _ = ndimage.label(mask, structure=FULL)
    if not len(points):
        return comps, np.zeros(0, dtype=comps.dtype)
    idx = np.rint(points).astype(int)
    ids = np.unique(comps[idx[:, 0], idx[:, 1], idx[:, 2]])
    return comps, ids[ids > 0]


def _disputed_part(component: np.ndarray, negative: np.ndarray, hu: np.ndarray, spacing: Sequence[float],
                   settings: WalkerSettings) -> np.ndarray:
    """The part of ``component`` a negative click in it takes away. A careful annotator (and the robot user) clicks
    near the middle of what is wrong, so the wrong part is about as thick as the click lies deep: the component's
    voxels lying deeper than the click (the core of a larger region the wrong part hangs on) are kept as
    evidence, and the walker decides between them and the click. A component with nothing deeper than the click
    (a stray blob, clicked at its middle) goes whole."""
    box = bounding_slices(component, margin=1)
    sub = component[box]
    lo = np.array([b.start for b in box])
    sp = np.asarray(spacing, dtype=np.float64)
    depth = ndimage.distance_transform_edt(sub, sampling=sp)
    at = [float(depth[tuple(q)]) for q in (np.rint(negative).astype(int) - lo)
          if all(0 <= v < n for v, n in zip(q, sub.shape)) and sub[tuple(q)]]
    out = np.zeros(component.shape, dtype=bool)
    keep = depth > (max(at) if at else 0.0) + float(sp.max())
    if not keep.any():
        out[box] = sub
        return out
    evidence = np.zeros(component.shape, dtype=bool)
    evidence[box] = keep
    region = segment(hu, spacing, Prompts(negative=negative, foreground=evidence), settings)
    return component & ~region


def apply_clicks(label: np.ndarray, hu: np.ndarray, spacing: Sequence[float],
                 clicks: Mapping[int, Sequence[Sequence[float]]],
                 settings: WalkerSettings = WalkerSettings()) -> dict:
    """Change ``label`` (in place, image grid) by the clicks (class value -> voxel indices on that grid).
    Returns per class what was done: ``walked`` (voxels of the new region) or ``removed`` (voxels dropped)."""
    stats: dict = {}
    classes = sorted({int(c) for c in np.unique(label) if c} | {int(c) for c, p in clicks.items() if c and len(p)})
    points = {c: np.asarray(p, dtype=np.float64).reshape(-1, 3) for c, p in clicks.items() if len(p)}

    def others(c: int) -> np.ndarray:
        rest = [p for k, p in points.items() if int(k) != c]
        return np.concatenate(rest) if rest else np.zeros((0, 3))

    mixed: dict[int, np.ndarray] = {}
    for c in classes:  # first every "not this", so that no class is kept from a click by a disputed one
        own, negative = points.get(c, np.zeros((0, 3))), others(c)
        if not len(negative):
            continue
        current = label == c
        comps, hit = _components_hit(current, negative)
        _, clicked = _components_hit(current, own)
        removed = 0
        for comp_id in np.setdiff1d(hit, clicked):
            drop = _disputed_part(comps == comp_id, negative, hu, spacing, settings)
            label[drop] = 0
            removed += int(drop.sum())
        if removed:
            stats[c] = {"removed": removed}
        both = np.intersect1d(hit, clicked)
        if len(both):  # points of both kinds in one component: the walker's region replaces it (second pass)
            mixed[c] = np.isin(comps, both)
    for c in classes:
        if c not in points:
            continue
        region = segment(hu, spacing, Prompts(points[c], others(c)), settings)
        if c in mixed:
            dropped = mixed[c] & ~region & (label == c)
            label[dropped] = 0
            stats[c] = {**stats.get(c, {}), "removed": stats.get(c, {}).get("removed", 0) + int(dropped.sum())}
        region &= label <= c  # classes decided later keep their voxels
        label[region] = c
        stats[c] = {**stats.get(c, {}), "walked": int(region.sum())}
    return stats
