"""Write a CT volume (NIfTI or an array with its RAS affine) as a DICOM series, one CT Image Storage file per slice.

A PACS holds series, not NIfTI files: to put the sample studies (phantoms) into Orthanc they are written as the
scanner would write them. The geometry is kept exactly: voxel (i, j, k) of the volume is column i, row j of
slice k, ImagePositionPatient / ImageOrientationPatient / PixelSpacing are the affine's (RAS turned into
DICOM's LPS), so a reader that stacks the slices (ITK, MONAI Label's conversion) gets the same world
coordinates back. Pixel data are int16 Hounsfield units (rescale slope 1, intercept 0).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Sequence

import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _ds(value: float) -> str:
    """A DICOM DS value: as many digits as its 16 characters hold (slices then stack evenly)."""
    for digits in range(12, 3, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{float(value):.4g}"


def write_series(volume: np.ndarray, affine: np.ndarray, folder: str | os.PathLike, patient_id: str,
                 series_description: str = "", study_uid: str | None = None, series_uid: str | None = None,
                 ) -> dict[str, str]:
    """Write ``volume`` (i, j, k in HU) with its RAS ``affine`` as ``folder/<k>.dcm``; returns the UIDs used."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"a CT series is written from a 3-D volume, not shape {volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    lps = LPS @ affine[:3, :3]
    spacing = np.sqrt((lps ** 2).sum(0))
    if np.any(spacing <= 0):
        raise ValueError("the affine has a zero-length axis")
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]  # along i (a row), along j (a column)
    origin = LPS @ affine[:3, 3]
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    now = datetime.datetime.now()
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    data = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = "CT"
        ds.PatientID = ds.PatientName = patient_id
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = time_
        ds.SeriesDescription = series_description or patient_id
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(v) for v in origin + lps[:, 2] * k]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, between columns
        ds.SliceThickness = _ds(spacing[2])
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()  # rows = j, columns = i
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(ds.filename, ds, write_like_original=False)
    return {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}


def write_nifti_as_series(path: str | os.PathLike, folder: str | os.PathLike, patient_id: str | None = None,
                          ) -> dict[str, str]:
    """The CT at ``path`` (NIfTI/NRRD readable by nibabel) as a DICOM series in ``folder``."""
    import nibabel as nib

    img = nib.load(str(path))
    name = patient_id or Path(path).name.split(".")[0]
    return write_series(np.asarray(img.dataobj), img.affine, folder, name, series_description=name)


def series_files(folder: str | os.PathLike) -> Sequence[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix == ".dcm")
