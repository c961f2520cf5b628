"""The prompts of a request, as the stock clients send them, checked against the image's shape (400 on anything
that cannot be a prompt, before any image work).

* **Deepgrow** (the 3D Slicer module's *SmartEdit* with a ``deepgrow`` model; OHIF's point tools):
  ``foreground`` / ``background``: lists of ``[i, j, k]`` voxel indices of the current segment;
* **a box**: ``roi``, the Slicer ROI widget's box as ``[i0, i1, j0, j1, k0, k1]`` voxel indices (each pair in
  either order: an LPS volume's RAS corners come out reversed);
* **scribbles** (Slicer's *Scribbles* section): a label file of the image's grid sent with the request, whose
  segments ``label_info`` names (``[{"name": ..., "id": ...}]``); ``foreground_scribbles`` and
  ``background_scribbles`` are the strokes and ``selected_label_name`` the segment they correct.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lib.clicks import MAX_CLICKS, _coordinate, _is_point_list
from lib.errors import InputError
from lib.prompts.walker import Prompts

FOREGROUND_SCRIBBLES = "foreground_scribbles"
BACKGROUND_SCRIBBLES = "background_scribbles"


def _points(request: Mapping, key: str, shape: Sequence[int] | None) -> np.ndarray:
    value = request.get(key)
    if value in (None, "", [], ()):
        return np.zeros((0, 3))
    if not _is_point_list(value):
        raise InputError(f"'{key}' must be a list of [i, j, k] voxel indices, got {str(value)[:80]!r}", 400)
    out = []
    for p in value:
        if len(p) != 3:
            raise InputError(f"a point has 3 voxel indices [i, j, k]; '{key}' has {list(p)!r}", 400)
        ijk = tuple(_coordinate(v, key) for v in p)
        if shape is not None and any(not 0 <= v < s for v, s in zip(ijk, shape)):
            raise InputError(f"point {list(ijk)} of '{key}' lies outside the image (voxel indices 0..{[s - 1 for s in shape]})", 400)
        out.append(ijk)
    if len(out) > MAX_CLICKS:
        raise InputError(f"{len(out)} points in '{key}', over the limit of {MAX_CLICKS}", 400)
    return np.asarray(out, dtype=np.float64)


def parse_box(value, shape: Sequence[int] | None) -> tuple[tuple[int, int], ...] | None:
    """``roi`` as per-axis ``(lo, hi)`` (``hi`` exclusive), clipped to the image; None when absent or empty."""
    if value in (None, "", [], ()):
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise InputError(f"'roi' must be [i0, i1, j0, j1, k0, k1] voxel indices, got {str(value)[:80]!r}", 400)
    v = [_coordinate(x, "roi") for x in value]
    box = []
    for a in range(3):
        lo, hi = sorted((v[2 * a], v[2 * a + 1]))
        if shape is not None:
            lo, hi = max(lo, 0), min(hi, int(shape[a]) - 1)
        if hi < lo:
            raise InputError(f"'roi' {v} lies outside the image (voxel indices 0..{[s - 1 for s in shape]})", 400)
        box.append((lo, hi + 1))
    return tuple(box)


def parse_point_prompts(request: Mapping, shape: Sequence[int] | None) -> Prompts:
    """Deepgrow's ``foreground`` / ``background`` and the ``roi`` box; 400 when none of them holds a prompt."""
    prompts = Prompts(_points(request, "foreground", shape), _points(request, "background", shape),
                      parse_box(request.get("roi"), shape))
    if not prompts.has_foreground():
        raise InputError("no prompt: place a foreground point (or a box) on the structure to segment", 400)
    return prompts


def scribble_ids(request: Mapping) -> tuple[int | None, int | None, int | None]:
    """(foreground scribbles id, background scribbles id, the selected segment's id) from ``label_info``."""
    info = request.get("label_info")
    if not isinstance(info, list) or not all(isinstance(e, Mapping) and "name" in e and "id" in e for e in info):
        raise InputError("scribbles need 'label_info': [{'name': ..., 'id': ...}, ...] naming the label file's segments", 400)
    ids = {str(e["name"]): int(e["id"]) for e in info}
    selected = request.get("selected_label_name")
    if FOREGROUND_SCRIBBLES not in ids and BACKGROUND_SCRIBBLES not in ids:
        raise InputError("no scribbles: 'label_info' names neither foreground_scribbles nor background_scribbles", 400)
    return ids.get(FOREGROUND_SCRIBBLES), ids.get(BACKGROUND_SCRIBBLES), ids.get(selected) if selected else None
