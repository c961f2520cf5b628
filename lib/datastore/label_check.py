"""Check a submitted label against its image before anything is stored.

A label is accepted when it is readable, 3-D, on the image's voxel grid (same shape; same direction,
spacing and origin within :data:`GEOMETRY_TOLERANCE`) and holds only integer label ids of the model.
Where the client says which value means which structure (the Slicer plugin's ``label_info``: a list of
``{"name", "idx"}``), values are mapped to the model's ids by name first. Anything else is a 422 that
says what is wrong, so one bad file can never break every later training run.

The geometry is read from the headers (NIfTI, NRRD), so checking a label never loads the CT's voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lib.errors import InputError

LABEL_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
# direction x spacing entries: this fraction of the voxel size; origin: this fraction of the smallest voxel
GEOMETRY_TOLERANCE = 1e-3
ORIGIN_TOLERANCE = 1e-2


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


def read_geometry(path: str) -> Geometry:
    """Shape and RAS affine of a NIfTI or NRRD file from its header."""
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        img = nib.load(path)
        return Geometry(_squeeze_shape(img.header.get_data_shape()), np.asarray(img.affine, dtype=np.float64))
    if ext == ".nrrd":
        import nrrd

        header = nrrd.read_header(path)
        return Geometry(_squeeze_shape(header["sizes"]), _nrrd_affine(header))
    raise ValueError(f"'{ext}' files are not supported")


def check_volume_file(path: str, what: str = "the uploaded image") -> Geometry:
    """The geometry of an uploaded 3-D volume, or :class:`InputError` 422 when it is unreadable or not 3-D."""
    try:
        geometry = read_geometry(path)
    except Exception as exc:
        raise InputError(f"{what} cannot be read (corrupt, truncated, or not .nii.gz, .nii or .nrrd): {exc}", 422) from None
    if len(geometry.shape) != 3:
        raise InputError(f"{what} has shape {geometry.shape}: a 3-D volume is required", 422)
    return geometry


def read_voxels(path: str) -> np.ndarray:
    ext = file_extension(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        data = np.asanyarray(nib.load(path).dataobj)
    else:
        import nrrd

        data, _ = nrrd.read(path)
    shape = _squeeze_shape(data.shape)
    return data.reshape(shape)


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


def value_map(label_info, labels: dict[str, int]) -> dict[int, int]:
    """File value -> model id from the client's ``label_info`` (entries whose name is one of the model's)."""
    if not label_info:
        return {}
    if isinstance(label_info, dict):  # {"name": idx}
        label_info = [{"name": k, "idx": v} for k, v in label_info.items()]
    if not isinstance(label_info, list):
        raise InputError("label_info must be a list of {\"name\", \"idx\"} entries", 422)
    by_name = {name.lower(): idx for name, idx in labels.items()}
    mapping: dict[int, int] = {}
    for entry in label_info:
        if not isinstance(entry, dict):
            raise InputError("label_info must be a list of {\"name\", \"idx\"} entries", 422)
        name = str(entry.get("name", "")).strip().lower()
        idx = entry.get("idx", entry.get("id", entry.get("value")))
        if name in ("background",):
            continue
        if name not in by_name:
            continue  # unnamed / unknown segments keep their value and are checked below
        try:
            value = int(idx)
        except (TypeError, ValueError):
            raise InputError(f"label_info entry {entry!r} has no integer idx", 422) from None
        if value != by_name[name]:
            mapping[value] = by_name[name]
    return mapping


@dataclass
class CheckedLabel:
    """A label that passed: ``data`` is set when it has to be rewritten (values mapped, float stored as integers)."""

    path: str
    extension: str
    data: np.ndarray | None
    values: dict[int, int]  # value -> voxel count, after mapping

    def voxels(self) -> np.ndarray:
        """The label's voxels as uint8 label ids (the rewritten ones when it had to be rewritten)."""
        return (self.data if self.data is not None else read_voxels(self.path)).astype(np.uint8)


def check_label(label_path: str, image_path: str, labels: dict[str, int], label_info=None) -> CheckedLabel:
    """Raise :class:`InputError` 422 unless ``label_path`` is a valid label of the image at ``image_path``."""
    ext = file_extension(label_path)
    if ext not in LABEL_EXTENSIONS:
        if ext == ".dcm":
            raise InputError("a DICOM SEG label is accepted only by a DICOMweb datastore; send the label as "
                             ".nii.gz, .nii or .nrrd on the image's voxel grid", 422)
        raise InputError(f"label files must be {', '.join(LABEL_EXTENSIONS)}; got '{ext or 'no extension'}'", 422)
    if not os.path.isfile(label_path) or os.path.getsize(label_path) == 0:
        raise InputError("the label file is empty", 422)
    try:
        geometry = read_geometry(label_path)
        data = read_voxels(label_path)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the label cannot be read (corrupt, truncated or not {ext}): {reason}", 422) from None
    try:
        image = read_geometry(image_path)
    except Exception as exc:
        raise InputError(f"the image's header cannot be read to check the label against it: {exc}", 422) from None
    problem = geometry_problem(geometry, image)
    if problem:
        raise InputError(problem + ": a label must be on its image's voxel grid", 422)

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
    small = data.astype(np.uint8, copy=False)
    counts = np.bincount(small.reshape(-1), minlength=1)
    mapping = value_map(label_info, labels)
    if mapping:
        lut = np.arange(256, dtype=np.uint8)
        for src, dst in mapping.items():
            if 0 <= src < 256:
                lut[src] = dst
        small = lut[small]
        counts = np.bincount(small.reshape(-1), minlength=1)
        rewrite = True
    present = {int(v): int(c) for v, c in enumerate(counts) if c}
    valid = {0, *labels.values()}
    bad = sorted(v for v in present if v not in valid)
    if bad:
        names = ", ".join(f"{v} {k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]))
        raise InputError(f"the label holds value(s) {bad} that are not label ids of this model (0 background, {names})", 422)
    return CheckedLabel(path=label_path, extension=ext, data=small if rewrite else None, values=present)


def write_like(src_path: str, data: np.ndarray, dst_path: str) -> None:
    """Write ``data`` with the header (geometry) of ``src_path``, in its format, as unsigned 8-bit labels."""
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

        header = dict(nrrd.read_header(src_path))
        header["type"] = "unsigned char"
        for key in ("endian",):
            header.pop(key, None)
        nrrd.write(dst_path, data.reshape(tuple(int(s) for s in header["sizes"])), header)
