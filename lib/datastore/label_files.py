"""Label and image files as stored: their geometry from the header alone (NIfTI, NRRD, a 3D Slicer ``.seg.nrrd``
with its segment table and layers), their voxels, and writing a labelmap with another file's geometry. What the
values mean, and whether a label fits its image, is :mod:`lib.datastore.label_check`'s business."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from lib.errors import InputError

LABEL_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
# direction x spacing entries: this fraction of the voxel size; origin: this fraction of the smallest voxel
# a label may declare at most this many bytes per image voxel (e.g. 8 segmentation layers, or one float64 layer)
# segments a client keeps beside the labels (3D Slicer's module skips these when it saves)
_SEGMENT_FIELD = re.compile(r"^Segment(\d+)_([A-Za-z]+)$")


def file_extension(path: str) -> str:
    lower = os.path.basename(path).lower()
    for ext in LABEL_EXTENSIONS:
        if lower.endswith(ext):
            return ext
    return os.path.splitext(lower)[1]


@dataclass
class Geometry:
    shape: tuple[int, ...]
    affine: np.ndarray  # voxel index -> RAS world mm

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


@dataclass
class Segment:
    """One segment of a 3D Slicer segmentation file."""

    index: int  # N of its SegmentN_ fields: its position in the segmentation (0-based)
    name: str
    value: int  # its label value in its layer
    layer: int


def _squeeze_shape(shape) -> tuple[int, ...]:
    dims = [int(s) for s in shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _nrrd_affine(header: dict) -> np.ndarray:
    dirs = header.get("space directions")
    if dirs is None:
        raise ValueError("NRRD header has no 'space directions'")
    rows = [np.asarray(d, dtype=np.float64) for d in dirs if d is not None and not np.all(np.isnan(np.asarray(d, dtype=np.float64)))]
    if len(rows) != 3:
        raise ValueError(f"NRRD header has {len(rows)} spatial axes, 3 are needed")
    affine = np.eye(4)
    affine[:3, :3] = np.stack(rows, axis=1)
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine[:3] = _LPS_TO_RAS @ affine[:3]
    elif space not in ("right-anterior-superior", "ras"):
        raise ValueError(f"NRRD space '{space}' is not supported (use LPS or RAS)")
    return affine


def segment_table(header: dict) -> list[Segment] | None:
    """The segments of a 3D Slicer segmentation's NRRD header in file order, or None for a plain NRRD.

    A file of Slicer before 4.11 has no ``LabelValue`` / ``Layer`` fields: each segment is value 1 in a layer of its own."""
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = _SEGMENT_FIELD.match(str(key))
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = str(value).strip()
    if not fields:
        return None
    segments = []
    for index in sorted(fields):
        f = fields[index]
        name = f.get("Name", f.get("ID", ""))
        try:
            value = int(f.get("LabelValue", 1))
            layer = int(f.get("Layer", 0 if "LabelValue" in f else index))
        except ValueError:
            raise ValueError(f"segment {index} ('{name}') has a label value or layer that is not an integer") from None
        segments.append(Segment(index, name, value, layer))
    return segments


def _layer_axis(header: dict) -> int | None:
    """The axis of a 4-D segmentation that holds its layers (no space direction: kind ``list``); None when 3-D."""
    sizes = [int(s) for s in header["sizes"]]
    if len(sizes) != 4:
        return None
    dirs = header.get("space directions")
    if dirs is None or len(dirs) != 4:
        return None
    free = [axis for axis, d in enumerate(dirs) if d is None or np.all(np.isnan(np.asarray(d, dtype=np.float64)))]
    return free[0] if len(free) == 1 else None


def _nrrd_geometry(header: dict) -> tuple[Geometry, int | None]:
    layer_axis = _layer_axis(header) if segment_table(header) is not None else None
    sizes = [int(s) for s in header["sizes"]]
    if layer_axis is not None:
        sizes.pop(layer_axis)
    return Geometry(_squeeze_shape(sizes), _nrrd_affine(header)), layer_axis


def read_geometry(path: str) -> Geometry:
    """Shape and RAS affine of a NIfTI or NRRD file from its header (a segmentation's spatial axes)."""
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        img = nib.load(path)
        return Geometry(_squeeze_shape(img.header.get_data_shape()), np.asarray(img.affine, dtype=np.float64))
    if ext == ".nrrd":
        import nrrd

        return _nrrd_geometry(nrrd.read_header(path))[0]
    raise ValueError(f"'{ext}' files are not supported")


def header_shape(path: str) -> tuple[int, int, int] | None:
    """A volume file's 3-D shape from its header alone; None for a folder (a DICOM series), an unreadable header or
    another number of axes (the loader then says what is wrong)."""
    if not os.path.isfile(path):
        return None
    try:
        shape = read_geometry(path).shape
    except Exception:
        return None
    return tuple(int(v) for v in shape) if len(shape) == 3 else None


def declared_bytes(path: str) -> int:
    """How many bytes a NIfTI/NRRD file's voxels take once decompressed, from its header alone (every axis, a
    segmentation's layers included): what reading it would allocate."""
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        header = nib.load(path).header
        return int(np.prod([int(s) for s in header.get_data_shape()], dtype=np.float64)) * header.get_data_dtype().itemsize
    import nrrd

    header = nrrd.read_header(path)
    dtype = nrrd.reader._determine_datatype(header)
    return int(np.prod([int(s) for s in header["sizes"]], dtype=np.float64)) * dtype.itemsize


def check_volume_file(path: str, what: str = "the uploaded image") -> Geometry:
    """The geometry of an uploaded 3-D volume, or :class:`InputError` 422 when it is unreadable or not 3-D."""
    try:
        geometry = read_geometry(path)
    except Exception as exc:
        raise InputError(f"{what} cannot be read (corrupt, truncated, or not .nii.gz, .nii or .nrrd): {exc}", 422) from None
    if len(geometry.shape) != 3:
        raise InputError(f"{what} has shape {geometry.shape}: a 3-D volume is required", 422)
    return geometry


def read_label(path: str) -> tuple[Geometry, np.ndarray, list[Segment] | None]:
    """Geometry, voxels and segment table (None for a plain labelmap) of a label file, each read once.

    A segmentation's voxels come as ``layers x i x j x k`` (one layer for a 3-D file)."""
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        geometry = Geometry(_squeeze_shape(img.header.get_data_shape()), np.asarray(img.affine, dtype=np.float64))
        return geometry, data.reshape(_squeeze_shape(data.shape)), None
    if ext != ".nrrd":
        raise ValueError(f"'{ext}' files are not supported")
    import nrrd

    data, header = nrrd.read(path)
    geometry, layer_axis = _nrrd_geometry(header)
    segments = segment_table(header)
    if segments is None:
        return geometry, data.reshape(_squeeze_shape(data.shape)), None
    layers = np.moveaxis(data, layer_axis, 0) if layer_axis is not None else data.reshape(1, *_squeeze_shape(data.shape))
    return geometry, layers, segments


def read_voxels(path: str) -> np.ndarray:
    return read_label(path)[1]


def write_like(src_path: str, data: np.ndarray, dst_path: str) -> None:
    """Write ``data`` with the geometry of ``src_path``, in its format, as an unsigned 8-bit 3-D labelmap (a
    segmentation's layers and segment table are not copied: what is stored is a plain labelmap)."""
    ext = file_extension(src_path)
    data = np.asarray(data, dtype=np.uint8)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        src = nib.load(src_path)
        header = src.header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        nib.save(nib.Nifti1Image(data.reshape(src.shape), src.affine, header), dst_path)
    else:
        import nrrd

        src = nrrd.read_header(src_path)
        layer_axis = _layer_axis(src) if segment_table(src) is not None else None
        spatial = [axis for axis in range(len(src["sizes"])) if axis != layer_axis]
        header = {"type": "unsigned char", "dimension": len(spatial), "sizes": [int(src["sizes"][a]) for a in spatial],
                  "kinds": ["domain"] * len(spatial), "encoding": "gzip"}
        for key in ("space", "space origin", "space units", "measurement frame"):
            if key in src:
                header[key] = src[key]
        if "space directions" in src:
            header["space directions"] = np.asarray([src["space directions"][a] for a in spatial], dtype=np.float64)
        nrrd.write(dst_path, data.reshape(tuple(header["sizes"])), header)
