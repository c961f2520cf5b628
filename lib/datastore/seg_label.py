"""A DICOM SEG as a label on its image's own voxel grid.

A SEG stores only the frames it needs: MONAI Label's conversion of a label on slices 5-15 of a 20-slice series
gives an 11-slice volume with another origin, and a SEG written by another tool may be cropped in-plane too.
Training, validation, scoring and active learning need the label voxel for voxel on the image, so the SEG is
put onto the image's grid by world coordinates, nearest neighbour (a label is never interpolated); voxels
the SEG does not cover are background. Segments are matched to the task's labels by their ``SegmentLabel``
(a SEG's segment numbers are its own: a label holding only the tumour has it as segment 1).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib import atomic

logger = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SegError(ValueError):
    """A SEG that cannot be turned into a label of its image (the message names why)."""


def segment_info(values, labels: dict[str, int]) -> list[dict]:
    """MONAI Label's ``label_info`` for writing a SEG of a label holding ``values``: one ``{"name"}`` per labelled
    value present, in value order, named after the task's label (so it reads back by :func:`segment_values`)."""
    names = {int(v): n for n, v in labels.items()}
    return [{"name": names[int(v)]} for v in sorted({int(v) for v in values}) if v > 0 and int(v) in names]


@dataclass
class SegLabel:
    data: np.ndarray  # on the image grid, uint8 label values
    affine: np.ndarray  # the image's (RAS)
    segments: dict[int, str] = field(default_factory=dict)  # SEG segment number -> task label name used
    ignored: list[str] = field(default_factory=list)  # segment labels with no task label


def seg_file(path: str | os.PathLike) -> Path:
    """The SEG instance of a downloaded series folder (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        if len(files) != 1:
            raise SegError(f"{p} holds {len(files)} files; a SEG series has one instance")
        p = files[0]
    return p


def segment_values(ds, labels: dict[str, int]) -> tuple[dict[int, int], dict[int, str], list[str]]:
    """SEG segment number -> task label value, by segment label (case-insensitive)."""
    by_name = {name.lower(): value for name, value in labels.items() if value > 0}
    mapping, used, ignored = {}, {}, []
    for seg in getattr(ds, "SegmentSequence", []):
        number = int(seg.SegmentNumber)
        name = str(getattr(seg, "SegmentLabel", "")).strip()
        value = by_name.get(name.lower())
        if value is None:
            ignored.append(name or f"segment {number}")
            continue
        mapping[number] = value
        used[number] = name
    return mapping, used, ignored


def sitk_affine_ras(image) -> np.ndarray:
    """RAS voxel-to-world affine of a SimpleITK image (SimpleITK is LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    a = np.eye(4)
    a[:3, :3] = direction * spacing[None, :]
    a[:3, 3] = image.GetOrigin()
    return LPS @ a


def resample_nearest(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape) -> np.ndarray:
    """``data`` (on ``affine``) read at every voxel centre of the target grid, nearest voxel; outside -> 0.

    A voxel covers +-0.5 around its centre (``grid-constant``): a centre a hair outside the first or last SEG frame,
    from rounding of positions, still reads that frame (``constant`` would drop the edge slices)."""
    from scipy import ndimage

    to_source = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    return ndimage.affine_transform(data, to_source[:3, :3], offset=to_source[:3, 3], output_shape=tuple(target_shape),
                                    order=0, mode="grid-constant", cval=0, prefilter=False)


def seg_on_image(seg_path: str | os.PathLike, image_path: str | os.PathLike, labels: dict[str, int]) -> SegLabel:
    """Read the SEG at ``seg_path`` and put it onto the grid of the image at ``image_path`` (see the module)."""
    import nibabel as nib
    import pydicom
    import pydicom_seg
    import SimpleITK

    path = seg_file(seg_path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise SegError(f"{path.name} is not a readable DICOM file: {exc}") from None
    if str(getattr(ds, "SOPClassUID", "")) != SEG_STORAGE or str(getattr(ds, "Modality", "")) != "SEG":
        raise SegError(f"{path.name} is not a DICOM SEG (modality {getattr(ds, 'Modality', '?')})")
    mapping, used, ignored = segment_values(ds, labels)
    if not mapping:
        raise SegError(f"none of the SEG's segments ({', '.join(ignored) or 'none'}) is a label of this task "
                       f"({', '.join(n for n, v in labels.items() if v > 0)})")
    try:
        result = pydicom_seg.MultiClassReader().read(ds)
    except Exception as exc:
        raise SegError(f"the SEG's frames cannot be read: {exc}") from None
    seg_img = result.image
    seg_data = np.transpose(SimpleITK.GetArrayFromImage(seg_img), (2, 1, 0))  # z, y, x -> i, j, k
    values = np.zeros(int(seg_data.max()) + 1 if seg_data.size else 1, dtype=np.uint8)
    for number, value in mapping.items():
        if number < values.size:
            values[number] = value
    seg_data = values[seg_data]
    image = nib.load(str(image_path))
    data = resample_nearest(seg_data, sitk_affine_ras(seg_img), image.affine, image.shape[:3]).astype(np.uint8)
    if ignored:
        logger.warning(f"SEG {path.name}: segments without a task label are left out: {ignored}")
    return SegLabel(data=data, affine=np.asarray(image.affine), segments=used, ignored=ignored)


def write_seg_label(seg_path, image_path, labels: dict[str, int], out_path) -> SegLabel:
    """:func:`seg_on_image`, written atomically as NIfTI with the image's affine (never a half-written label)."""
    from lib.transforms.writer import write_nifti

    found = seg_on_image(seg_path, image_path, labels)
    atomic.write_with(out_path, lambda tmp: write_nifti(found.data, found.affine, tmp), suffix=".nii.gz")
    return found


def submitted_seg_as_label(seg_path: str, image_id: str, image: str, labels: dict[str, int]) -> str:
    """A submitted DICOM SEG as a label file on the image's grid (segments mapped by name), or a 422 saying why
    it cannot be the image's label."""
    import pydicom

    from lib.errors import InputError
    from lib.transforms.writer import write_label

    try:
        ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"the uploaded .dcm is not a readable DICOM file: {exc}", 422) from None
    refs = ds.get("ReferencedSeriesSequence")
    referenced = str(refs[0].get("SeriesInstanceUID", "") or "") if refs else ""
    if referenced and referenced != image_id:
        raise InputError(f"the DICOM SEG references series {referenced}, not {image_id}: submit it for that series", 422)
    try:
        found = seg_on_image(seg_path, image, labels)
    except SegError as exc:
        raise InputError(f"the DICOM SEG cannot be a label of {image_id}: {exc}", 422) from None
    return write_label(found.data, found.affine, ".nii.gz")


def seg_of_label(series_dir: str, image: str, label_file: str, voxels, segments: list[dict],
                 labels: dict[str, int]) -> str:
    """Write the label as a DICOM SEG of the series in ``series_dir`` and read it back onto the image grid: the SEG
    file when it reads back voxel for voxel as the label, else a 422 (and no file is left)."""
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    from lib.errors import InputError

    seg_file = nifti_to_dicom_seg(series_dir, label_file, segments, use_itk=True)
    if not seg_file or not os.path.exists(seg_file):
        raise InputError("the label could not be written as a DICOM SEG (see the server log); nothing was stored", 422)
    try:
        try:
            back = seg_on_image(seg_file, image, labels)
        except SegError as exc:
            raise InputError(f"the DICOM SEG written from the label cannot be read back as a label ({exc}); "
                             "nothing was stored in the PACS", 422) from None
        changed = int(np.count_nonzero(back.data != np.asarray(voxels, dtype=np.uint8)))
        if changed:
            raise InputError(f"the DICOM SEG written from the label reads back with {changed} voxel(s) changed; "
                             "nothing was stored in the PACS", 422)
    except BaseException:
        os.unlink(seg_file)
        raise
    return seg_file


def seg_reference(meta, labels: dict[str, int]) -> tuple[str, tuple, str | None] | None:
    """From a SEG series' metadata: (the CT series it references, a time key to sort SEGs newest first, why the
    metadata already says it cannot be a label of this task or None); None when it references no series."""
    ref = meta.get("ReferencedSeriesSequence")
    image = str(ref[0].get("SeriesInstanceUID", "") or "") if ref else ""
    if not image:
        return None
    # field by field (a SEG without a SeriesDate sorts as older, not shifted against the others)
    when = tuple(str(meta.get(k, "") or "") for k in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime",
                                                      "InstanceCreationDate", "InstanceCreationTime"))
    problem = None
    modality = str(meta.get("Modality", "") or "")
    if modality and modality != "SEG":
        problem = f"not a DICOM SEG (modality {modality})"
    elif "SegmentSequence" in meta:
        mapping, _, ignored = segment_values(meta, labels)
        if not mapping:
            problem = (f"none of its segments ({', '.join(ignored) or 'none'}) is a label of this task "
                       f"({', '.join(n for n, v in labels.items() if v > 0)})")
    return image, when, problem
