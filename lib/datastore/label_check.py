"""Check a submitted label against its image before anything is stored, and say what each of its values means.

A label is accepted when it is readable, 3-D, on the image's voxel grid (same shape; same direction,
spacing and origin within :data:`GEOMETRY_TOLERANCE`) and holds only integer label ids of the model.
Anything else is a 422 that says what is wrong, so one bad file can never break every later training run.

One rule says what a file value means, for every client and datastore:

* **A 3D Slicer segmentation** (``.seg.nrrd``; recognised by its ``SegmentN_*`` header fields, whatever the file
  is called) is read by its own segment table: each segment is the voxels of its layer that hold its label
  value, and its name says what it is (the task's labels, case-insensitive; ``background`` and the scribble
  segments are ignored). A multi-layer (4-D) file, where segments overlap, is merged: :func:`merge_segments`.
  A ``label_info`` sent with it must not contradict the file's segments (:func:`check_against_segments`).
* **A plain labelmap with ``label_info``** (``[{"name", "idx"}, ...]``) is read by :func:`labelmap_reading`:
  ``idx`` as the file value (a generic client, OHIF) or the position among the named entries (what 3D
  Slicer's ``ExportSegmentsToLabelmapNode`` writes, while its ``idx`` counts every segment, background
  included); the reading that names every value present is used, and a file both readings fit differently,
  or neither fits, is refused with the reason. Nothing is guessed.
* **A plain labelmap without ``label_info``** holds the model's ids.

A named segment that is not a task label and holds voxels is a 422 naming it. The geometry is read from the
headers (NIfTI, NRRD), so checking a label never loads the CT's voxels, and the label's voxels are read once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lib.datastore.label_files import (LABEL_EXTENSIONS, Geometry, Segment, declared_bytes, file_extension,
                                       read_geometry, read_label, read_voxels)
from lib.errors import InputError

GEOMETRY_TOLERANCE = 1e-3
ORIGIN_TOLERANCE = 1e-2
MAX_BYTES_PER_VOXEL = 8
IGNORED_SEGMENTS = ("background", "foreground_scribbles", "background_scribbles")

def geometry_problem(label: Geometry, image: Geometry) -> str | None:
    if len(label.shape) != 3:
        return f"the label is {len(label.shape)}-D (shape {label.shape}); a 3-D label volume is required"
    if tuple(label.shape) != tuple(image.shape):
        return f"the label's shape {tuple(label.shape)} is not the image's {tuple(image.shape)}"
    spacing = image.spacing
    dir_err = np.abs(label.affine[:3, :3] - image.affine[:3, :3]) / np.maximum(spacing, 1e-6)[None, :]
    if float(dir_err.max()) > GEOMETRY_TOLERANCE:
        return (f"the label's orientation/spacing differ from the image's (spacing {label.spacing.round(4).tolist()} vs "
                f"{spacing.round(4).tolist()} mm, direction x spacing {label.affine[:3, :3].round(4).tolist()} vs "
                f"{image.affine[:3, :3].round(4).tolist()})")
    shift = float(np.abs(label.affine[:3, 3] - image.affine[:3, 3]).max())
    if shift > ORIGIN_TOLERANCE * float(spacing.min()):
        return (f"the label's origin {label.affine[:3, 3].round(3).tolist()} is {shift:.3g} mm away from the image's "
                f"{image.affine[:3, 3].round(3).tolist()}")
    return None


# ---- what the values mean ------------------------------------------------------------------------------
def _named_entries(label_info) -> list[tuple[str, object]]:
    """The ``label_info`` entries of segments to store, in the client's order: ``(name, idx or None)``."""
    if not label_info:
        return []
    if isinstance(label_info, dict):  # {"name": idx}
        label_info = [{"name": k, "idx": v} for k, v in label_info.items()]
    if not isinstance(label_info, list) or not all(isinstance(e, dict) for e in label_info):
        raise InputError("label_info must be a list of {\"name\", \"idx\"} entries", 422)
    entries = []
    for entry in label_info:
        name = str(entry.get("name", "")).strip()
        if name.lower() not in IGNORED_SEGMENTS:
            entries.append((name, entry.get("idx", entry.get("id", entry.get("value")))))
    return entries


def _integer_idx(name: str, idx) -> int:
    if isinstance(idx, bool) or not isinstance(idx, (int, float, str)):
        raise InputError(f"label_info entry '{name}' has no integer idx (got {idx!r})", 422)
    try:
        value = float(idx)
        if value != int(value):
            raise ValueError(idx)
    except (ValueError, OverflowError):
        raise InputError(f"label_info entry '{name}' has no integer idx (got {idx!r})", 422) from None
    return int(value)


def labelmap_reading(label_info, present) -> dict[int, str] | None:
    """File value -> segment name of a plain labelmap sent with ``label_info``; None when it names no segment.

    The named entries (``background`` and scribbles left out) give two readings: by ``idx`` (file value = idx,
    what a generic client and OHIF mean) and by rank (file value = position among the named entries: 3D
    Slicer's export writes 1..n in that order, while its ``idx`` counts every segment of the node, so with
    ``background`` listed first it is one more). The reading that names every non-zero value in ``present``
    is used (both, when they agree on each of them). When both name every value but disagree on one, or
    neither names them all, which voxel is what cannot be known: 422 with the reason, never a guess."""
    entries = _named_entries(label_info)
    if not entries:
        return None
    by_rank = {rank + 1: name for rank, (name, _) in enumerate(entries)}
    by_idx: dict[int, str] | None = {}
    for name, idx in entries:
        if idx is None:
            by_idx = None  # no idx to read by
            break
        value = _integer_idx(name, idx)
        if value in by_idx and by_idx[value].lower() != name.lower():
            raise InputError(f"label_info gives idx {value} to both '{by_idx[value]}' and '{name}'; the label was not stored", 422)
        by_idx[value] = name
    values = sorted(int(v) for v in present if v)
    idx_missing = values if by_idx is None else [v for v in values if v not in by_idx]
    rank_missing = [v for v in values if v not in by_rank]
    if not idx_missing and not rank_missing:
        differ = [v for v in values if by_idx[v].lower() != by_rank[v].lower()]
        if not differ:
            return by_rank
        what = "; ".join(f"value {v} is '{by_idx[v]}' by idx but '{by_rank[v]}' by position" for v in differ)
        raise InputError(
            f"label_info is ambiguous for this file: {what} (idx = the file value, as generic clients send it; position "
            "among the named segments = what 3D Slicer's labelmap export writes). The label was not stored: send label_info "
            "whose idx are the file's values, or a .seg.nrrd; with 'background' listed last in /info the two agree", 422)
    if not idx_missing:
        return by_idx
    if not rank_missing:
        return by_rank
    idx_text = "label_info has no idx" if by_idx is None else f"by idx it names values {sorted(by_idx)}"
    raise InputError(
        f"label_info does not fit this file: it holds values {values}; {idx_text}, by position among the named segments "
        f"values {sorted(by_rank)}. The label was not stored", 422)


def check_against_segments(label_info, segments: list[Segment]) -> None:
    """422 where ``label_info`` contradicts a segmentation file: an entry names a segment the file lacks, or gives
    an ``idx`` that is neither that segment's position (3D Slicer: 1 + its index among all the node's segments,
    the order the file keeps) nor its label value."""
    names = ", ".join(f"'{s.name}'" for s in segments) or "none"
    for name, idx in _named_entries(label_info):
        same = [s for s in segments if s.name.strip().lower() == name.lower()]
        if not same:
            raise InputError(f"label_info names '{name}' but the .seg.nrrd has no segment of that name (its segments: "
                             f"{names}); the label was not stored", 422)
        if idx is None:
            continue
        value = _integer_idx(name, idx)
        if not any(value in (s.index + 1, s.value) for s in same):
            s = same[0]
            raise InputError(f"label_info gives '{name}' idx {value}, but in the .seg.nrrd '{s.name}' is segment {s.index + 1} "
                             f"with label value {s.value} in layer {s.layer}; the label was not stored", 422)


def _model_ids(labels: dict[str, int]) -> dict[str, int]:
    return {name.lower(): int(value) for name, value in labels.items() if int(value) > 0}


def _label_names(labels: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v > 0)


def _unknown_segments(unknown: list[str], labels: dict[str, int]) -> InputError:
    return InputError(f"the label holds voxels of segment(s) {', '.join(unknown)} that are not labels of this model "
                      f"(0 background, {_label_names(labels)}): rename or remove them; the label was not stored", 422)


def merge_segments(layers: np.ndarray, segments: list[Segment], labels: dict[str, int]) -> np.ndarray:
    """One labelmap of the model's ids from a segmentation's layers (``layers x i x j x k``, uint8).

    Each segment is the voxels of its layer that hold its label value; its name says which model id they get.
    Where segments overlap (3D Slicer keeps overlapping segments in separate layers: a 4-D file) the higher
    model id wins, so a tumour drawn over the pancreas stays tumour, as in the task's labelmaps and in 3D
    Slicer's own labelmap export of the pancreas-then-tumour segment list. ``background`` and scribble segments
    are ignored; a named segment that is not a task label and holds voxels, a value no segment claims and a
    segment in a layer the file lacks are each a 422."""
    by_name = _model_ids(labels)
    n_layers = layers.shape[0]
    outside = [s for s in segments if not 0 <= s.layer < n_layers]
    if outside:
        raise InputError(f"segment '{outside[0].name}' is in layer {outside[0].layer} but the .seg.nrrd has {n_layers} "
                         "layer(s)", 422)
    merged = np.zeros(layers.shape[1:], np.uint8)
    unknown = []
    for layer in range(n_layers):
        data = layers[layer]
        counts = np.bincount(data.reshape(-1), minlength=256)
        lut = np.zeros(256, np.uint8)
        claimed = np.zeros(256, bool)
        claimed[0] = True
        for seg in (s for s in segments if s.layer == layer and 0 < s.value < 256):
            claimed[seg.value] = True
            key = seg.name.strip().lower()
            if key in IGNORED_SEGMENTS:
                continue
            if key not in by_name:
                if counts[seg.value]:
                    unknown.append(f"'{seg.name}' ({int(counts[seg.value])} voxels)")
                continue
            lut[seg.value] = max(lut[seg.value], by_name[key])
        stray = np.flatnonzero((counts > 0) & ~claimed).tolist()
        if stray:
            raise InputError(f"the .seg.nrrd holds value(s) {stray} in layer {layer} that no segment has as its label "
                             "value; the label was not stored", 422)
        if lut.any():
            np.maximum(merged, lut[data], out=merged)
    if unknown:
        raise _unknown_segments(unknown, labels)
    return merged


@dataclass
class CheckedLabel:
    """A label that passed: ``data`` is set when it has to be rewritten (values mapped, float stored as integers,
    a segmentation merged into one labelmap)."""

    path: str
    extension: str
    data: np.ndarray | None
    values: dict[int, int]  # value -> voxel count, after mapping
    segmentation: bool = False  # a 3D Slicer segmentation file (its values mean its own segment table)

    def voxels(self) -> np.ndarray:
        """The label's voxels as uint8 label ids (the rewritten ones when it had to be rewritten)."""
        return (self.data if self.data is not None else read_voxels(self.path)).astype(np.uint8)


def _integer_voxels(data: np.ndarray, labels: dict[str, int]) -> tuple[np.ndarray, bool]:
    """The voxels as uint8, and whether they had to be converted to be stored (a float label)."""
    rewrite = False
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise InputError("the label holds NaN or infinite values", 422)
        if not np.all(data == np.round(data)):
            raise InputError("the label holds fractional values (e.g. a probability map); labels are integer ids", 422)
        rewrite = True
    elif data.dtype.kind not in "iub":
        raise InputError(f"the label's voxel type {data.dtype} is not an integer type", 422)
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if lo < 0 or hi > 255:
        raise InputError(f"the label holds values {lo}..{hi}; valid ids are {sorted({0, *labels.values()})}", 422)
    return data.astype(np.uint8, copy=False), rewrite


def count_values(small: np.ndarray) -> np.ndarray:
    """Voxels per value of a uint8 volume, in slabs (``np.bincount`` of the whole would copy it as int64)."""
    flat = small.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    step = 1 << 24
    for start in range(0, flat.size, step):
        counts += np.bincount(flat[start:start + step], minlength=256)
    nonzero = np.flatnonzero(counts)
    return counts[: (int(nonzero[-1]) + 1) if nonzero.size else 1]


def check_label(label_path: str, image_path: str, labels: dict[str, int], label_info=None) -> CheckedLabel:
    """Raise :class:`InputError` 422 unless ``label_path`` is a valid label of the image at ``image_path``; the
    returned label holds the model's ids (see the module for what the file's values are taken to mean)."""
    ext = file_extension(label_path)
    if ext not in LABEL_EXTENSIONS:
        if ext == ".dcm":
            raise InputError("a DICOM SEG label is accepted only by a DICOMweb datastore; send the label as "
                             ".nii.gz, .nii or .nrrd on the image's voxel grid", 422)
        raise InputError(f"label files must be {', '.join(LABEL_EXTENSIONS)}; got '{ext or 'no extension'}'", 422)
    if not os.path.isfile(label_path) or os.path.getsize(label_path) == 0:
        raise InputError("the label file is empty", 422)
    def unreadable(exc: Exception) -> InputError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return InputError(f"the label cannot be read (corrupt, truncated or not {ext}): {reason}", 422)

    try:
        image = read_geometry(image_path)
    except Exception as exc:
        raise InputError(f"the image's header cannot be read to check the label against it: {exc}", 422) from None
    # the header first: a label claiming another grid, or more bytes than a label of this image can hold, is
    # refused before a single voxel is decompressed (a tiny file can claim gigabytes)
    try:
        claimed, size = read_geometry(label_path), declared_bytes(label_path)
    except Exception as exc:
        raise unreadable(exc) from None
    problem = geometry_problem(claimed, image)
    if problem:
        raise InputError(problem + ": a label must be on its image's voxel grid", 422)
    most = MAX_BYTES_PER_VOXEL * int(np.prod(image.shape, dtype=np.float64))
    if size > most:
        raise InputError(f"the label's header declares {size / 2**20:.0f} MB of voxels, more than a label of this image "
                         f"can hold ({most / 2**20:.0f} MB: {MAX_BYTES_PER_VOXEL} bytes per voxel)", 422)
    try:
        geometry, data, segments = read_label(label_path)
    except Exception as exc:
        raise unreadable(exc) from None

    small, rewrite = _integer_voxels(data, labels)
    if segments is not None:  # a 3D Slicer segmentation: its own segment table says what is what
        check_against_segments(label_info, segments)
        small = merge_segments(small, segments, labels)
        counts = count_values(small)
        rewrite = True  # stored as a plain labelmap of the model's ids
    else:
        counts = count_values(small)
        reading = labelmap_reading(label_info, np.flatnonzero(counts).tolist())
        if reading is not None:
            by_name = _model_ids(labels)
            unknown = [f"'{name or '(unnamed)'}' (value {v}, {int(counts[v])} voxels)" for v, name in sorted(reading.items())
                       if v < counts.size and counts[v] and name.lower() not in by_name]
            if unknown:
                raise _unknown_segments(unknown, labels)
            lut = np.arange(256, dtype=np.uint8)
            for value, name in reading.items():
                if 0 < value < 256:
                    lut[value] = by_name.get(name.lower(), 0)
            if not np.array_equal(lut[: counts.size], np.arange(counts.size)):
                small = lut[small]
                counts = np.bincount(lut[: counts.size], weights=counts, minlength=1).astype(np.int64)
                rewrite = True
    present = {int(v): int(c) for v, c in enumerate(counts) if c}
    valid = {0, *labels.values()}
    bad = sorted(v for v in present if v not in valid)
    if bad:
        raise InputError(f"the label holds value(s) {bad} that are not label ids of this model (0 background, "
                         f"{_label_names(labels)})", 422)
    return CheckedLabel(path=label_path, extension=ext, data=small if rewrite else None, values=present,
                        segmentation=segments is not None)


