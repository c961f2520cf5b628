"""A DICOMweb PACS (e.g. Orthanc) as the studies folder: MONAI Label's DICOMweb datastore, made safe to train on.

What this adds to :class:`monailabel.datastore.dicom.DICOMWebDatastore`:

* **labels map to their image**: each SEG series is read once for the CT series it references
  (``ReferencedSeriesSequence``); an image's label is its newest *usable* SEG. Asking for the label of a CT series
  (as training does, ``get_label_uri(<CT UID>, "final")``) finds that SEG - MONAI Label downloaded the CT
  itself into the label folder and failed on it, for good, since the bad folder stayed in its cache;
* **a SEG that cannot be used never hides a good one**: a SEG whose metadata names no segment of the task (or that
  is no SEG) is left out of the label index at once; one whose frames turn out unusable when it is put onto the
  image grid is remembered as such (``seg_problems.json`` in the cache, shared with the training processes) and
  the image's next newest SEG is used instead. An image counts as labelled while it has a SEG not known to be
  unusable; one whose SEGs are all unusable is unlabelled again and :meth:`label_problem` says why;
* **labels on the image's grid**: the SEG is put onto the image's voxel grid by world coordinates, nearest
  neighbour (:mod:`lib.datastore.seg_label`), so cropped SEGs train, validate and score correctly;
* **fresh**: the series list and the label index are re-read from the PACS after ``refresh_seconds`` (default
  10 s, ``--conf dicomweb_refresh_seconds``) instead of MONAI Label's 2 hours, and at once after a label is saved
  here, so ``/datastore``, Next Sample, scoring and ``auto_train_after`` see new series and labels; a series with
  a final label is never handed out as unlabelled;
* **checked labels**: a submitted label (NIfTI/NRRD, OHIF's raw ``.bin``, or a DICOM SEG ``.dcm``) is checked
  against its image like any other (:func:`lib.datastore.label_check.check_label`, with the client's
  ``label_info`` saying which value is which structure) before a SEG is written; its segments are named after the
  task's labels, and the SEG is read back onto the image grid and compared voxel for voxel before it is stored,
  so what reaches the PACS is exactly the label, and a label that cannot be used is a 422 with nothing stored.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import Any, Dict, List, Optional

from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from pydicom.dataset import Dataset

from lib import atomic
from lib.datastore.ttl import TTLValue
from lib.datastore.seg_label import seg_of_label, seg_reference, submitted_seg_as_label

logger = logging.getLogger(__name__)

FINAL = "final"


def _uid(ds: Dataset, keyword: str) -> str:
    return str(ds[keyword].value) if keyword in ds else ""


class PACSDatastore(DICOMWebDatastore):
    def __init__(self, client, search_filter: Dict[str, Any], labels: dict[str, int], cache_path: str | None = None,
                 fetch_by_frame: bool = False, refresh_seconds: float = 10.0):
        super().__init__(client, search_filter, cache_path=cache_path, fetch_by_frame=fetch_by_frame,
                         convert_to_nifti=True)
        self.labels = {k: int(v) for k, v in labels.items()}
        self.refresh_seconds = float(refresh_seconds)
        self._series = TTLValue(self.refresh_seconds, self._query_series)
        self._index = TTLValue(self.refresh_seconds, self._query_labels)
        # SEG UID -> (CT UID, time key, problem seen in its metadata or None); a SEG never changes
        self._seg_refs: dict[str, tuple[str, tuple, str | None] | None] = {}
        self._problems: dict[str, str] = {}  # image -> why it has no usable label
        self._convert_lock = threading.Lock()
        self._converted_path = os.path.join(self._datastore_path, "seg_labels.json")
        self._seg_problems_path = os.path.join(self._datastore_path, "seg_problems.json")

    # ---- what is in the PACS ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget the cached series list and label index: the next call asks the PACS."""
        self._series.clear()
        self._index.clear()

    def _query_series(self) -> list[str]:
        datasets = self._client.search_for_series(search_filters=self._search_filter)
        return sorted({_uid(Dataset.from_json(d), "SeriesInstanceUID") for d in datasets} - {""})

    def _seg_reference(self, study_uid: str, seg_uid: str) -> tuple[str, tuple, str | None] | None:
        """(referenced CT UID, time key, why the metadata already says the SEG cannot be used or None)."""
        if seg_uid not in self._seg_refs:
            meta = Dataset.from_json(self._client.retrieve_series_metadata(study_uid, seg_uid)[0])
            self._seg_refs[seg_uid] = seg_reference(meta, self.labels)
        return self._seg_refs[seg_uid]

    def _seg_problems(self) -> dict[str, str]:
        """SEG UID -> why it cannot be a label (what its frames showed when it was put onto its image's grid)."""
        return atomic.read_json(self._seg_problems_path, default={}) or {}

    def _query_labels(self) -> dict[str, list[str]]:
        """CT series UID -> its SEG series UIDs, newest first, that may be its label (only for CT series this datastore
        lists; a SEG known to be unusable is left out)."""
        images = set(self._series.get())
        known_bad = self._seg_problems()
        found: dict[str, list[tuple[tuple, str]]] = {}
        for d in self._client.search_for_series(search_filters={"Modality": "SEG"}):
            ds = Dataset.from_json(d)
            seg_uid, study_uid = _uid(ds, "SeriesInstanceUID"), _uid(ds, "StudyInstanceUID")
            try:
                ref = self._seg_reference(study_uid, seg_uid)
            except Exception as exc:
                logger.warning(f"SEG {seg_uid} skipped: its metadata cannot be read ({exc})")
                continue
            if ref is None:
                logger.warning(f"SEG {seg_uid} skipped: it names no referenced series")
                continue
            image, when, problem = ref
            if image not in images:
                logger.debug(f"SEG {seg_uid} skipped: its series {image} is not in this datastore's list")
                continue
            problem = problem or known_bad.get(seg_uid)
            if problem:
                self._problems.setdefault(image, f"SEG {seg_uid}: {problem}")
                logger.debug(f"SEG {seg_uid} of {image} is not a usable label: {problem}")
                continue
            found.setdefault(image, []).append((when, seg_uid))
        for image in found:
            self._problems.pop(image, None)
        return {image: [uid for _, uid in sorted(segs, reverse=True)] for image, segs in found.items()}

    def _candidates(self, image_id: str) -> list[str]:
        """The image's SEGs that may be its label, newest first (without those found unusable since the index was read)."""
        segs = self._index.get().get(image_id, [])
        if not segs:
            return []
        bad = self._seg_problems()
        return [s for s in segs if s not in bad]

    def list_images(self) -> List[str]:
        return list(self._series.get())

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        if label_tag not in (None, "", FINAL):
            return LocalDatastore.get_labeled_images(self, label_tag, labels)
        index = self._index.get()
        bad = self._seg_problems()
        return sorted(image for image, segs in index.items() if any(s not in bad for s in segs))

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        labelled = set(self.get_labeled_images(label_tag, labels))
        return [s for s in self.list_images() if s not in labelled]

    def has_image(self, image_id: str) -> bool:
        """Whether the PACS lists the series (asked again at once when the cached list lacks it)."""
        if image_id in set(self.list_images()):
            return True
        self._series.clear()
        return image_id in set(self.list_images())

    def label_problem(self, image_id: str) -> str | None:
        """Why no SEG of the image could be used as its label (None when one could, or none was tried)."""
        return self._problems.get(image_id)

    # ---- labels as files on the image grid ----------------------------------------------------------
    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        if label_tag != FINAL:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        index = self._index.get()
        if label_id in index:  # a CT series UID (what training asks with): its newest usable SEG
            return self._image_label(label_id) or ""
        # a SEG series UID (MONAI Label's own calls): the image's label when that SEG is the one in use
        image_id = image_id or next((i for i, segs in index.items() if label_id in segs), "")
        if not image_id:
            return ""
        path = self._image_label(image_id)
        return path if path and self._converted().get(image_id) == label_id else ""

    def _image_label(self, image_id: str) -> str | None:
        """The image's label file from its newest usable SEG; an unusable newer SEG is passed over (and remembered)."""
        tried = []
        for seg_uid in self._candidates(image_id):
            path = self._label_file(image_id, seg_uid)
            if path:
                if tried:
                    logger.warning(f"label of {image_id}: SEG {seg_uid} used; newer SEG(s) cannot be: {'; '.join(tried)}")
                self._problems.pop(image_id, None)
                return path
            tried.append(self._problems.get(image_id, f"SEG {seg_uid}"))
        if tried:
            self._problems[image_id] = "; ".join(tried)
        return None

    def _label_path(self, image_id: str) -> str:
        """The cached label of an image on its grid (what training reads)."""
        return os.path.join(self._datastore.label_path(FINAL), f"{image_id}.nii.gz")

    def _converted(self) -> dict[str, str]:
        """image id -> the SEG UID its cached label file was made from (``seg_labels.json``)."""
        return atomic.read_json(self._converted_path, default={}) or {}

    def _record_conversion(self, image_id: str, seg_uid: str | None) -> None:
        """Note (``seg_uid``) or forget (None) which SEG the image's cached label file holds; under the lock."""
        made = self._converted()
        if seg_uid:
            made[image_id] = seg_uid
        else:
            made.pop(image_id, None)
        atomic.write_json(self._converted_path, made, indent=1)

    def _label_file(self, image_id: str, seg_uid: str) -> str | None:
        """The image's cached label made from this SEG (converted now unless it is already), or None when the SEG
        cannot be used; a SEG whose content cannot be used is remembered (``seg_problems.json``), a failed download
        is not (it is tried again)."""
        from lib.datastore.seg_label import SegError, write_seg_label

        out = self._label_path(image_id)
        with self._convert_lock:
            if self._converted().get(image_id) == seg_uid and os.path.exists(out):
                return out
            seg_dir = os.path.realpath(os.path.join(self._datastore.label_path(FINAL), seg_uid))
            try:
                image = self.get_image_uri(image_id)
                if not os.path.isdir(seg_dir) or not os.listdir(seg_dir):
                    dicom_web_download_series(None, seg_uid, seg_dir, self._client, self._fetch_by_frame)
                found = write_seg_label(seg_dir, image, self.labels, out)
            except (SegError, OSError, ValueError, RuntimeError) as exc:
                shutil.rmtree(seg_dir, ignore_errors=True)  # never keep a bad download: the next try fetches again
                self._problems[image_id] = f"SEG {seg_uid}: {exc}"
                logger.warning(f"SEG {seg_uid} is not usable as the label of {image_id}: {exc}")
                if isinstance(exc, SegError):
                    problems = self._seg_problems()
                    problems[seg_uid] = str(exc)
                    atomic.write_json(self._seg_problems_path, problems, indent=1)
                return None
            self._record_conversion(image_id, seg_uid)
            self._problems.pop(image_id, None)
            logger.info(f"SEG {seg_uid} -> label of {image_id} on its grid (segments {found.segments})")
            return out

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        items = []
        for image_id in self.get_labeled_images():
            label = self.get_label_uri(image_id, FINAL)
            if label:
                items.append({"image": self.get_image_uri(image_id), "label": label})
        return items

    # ---- saving a label ---------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any],
                   label_id: str = "") -> str:
        """Check the label against its image (the client's ``label_info`` says which value is which structure, as
        for the studies folder), name its segments after the task's labels, store it (for ``final`` a DICOM SEG in
        the PACS, read back and compared first), and re-read the label index at once. A label that cannot be used
        is an :class:`InputError` 422 with the reason, and nothing reaches the PACS."""
        import nibabel as nib
        from monailabel.datastore.utils.convert import binary_to_image

        from lib.datastore.label_files import file_extension
        from lib.datastore.label_check import check_label
        from lib.datastore.seg_label import segment_info
        from lib.errors import InputError
        from lib.transforms.writer import write_label

        if not self.has_image(image_id):
            raise InputError(f"no series {image_id!r} in the PACS", 404)
        image = self.get_image_uri(image_id)
        info = dict(label_info or {})
        client_label_info = info.get("label_info")
        temporary = []
        try:
            if file_extension(label_filename) == ".dcm":  # a DICOM SEG: its segments say which structure by name
                label_filename = self._seg_as_label(label_filename, image_id, image)
                temporary.append(label_filename)
                client_label_info = None
            elif label_filename.endswith(".bin"):  # OHIF's raw label volume, in the image's voxel order
                try:
                    label_filename = binary_to_image(image, label_filename)
                except Exception as exc:
                    raise InputError(f"the raw label does not fit the image: {exc}", 422) from None
                temporary.append(label_filename)
            checked = check_label(label_filename, image, self.labels, client_label_info)
            voxels = checked.voxels()
            # stored as plain label ids in a NIfTI on the image's grid: the cached label is exactly the SEG's content
            label_filename = write_label(voxels, nib.load(image).affine, ".nii.gz")
            temporary.append(label_filename)
            info["label_info"] = segment_info(checked.values, self.labels)  # the values present, named
            if label_tag == FINAL:
                if not info["label_info"]:
                    raise InputError("the label is empty: a DICOM SEG needs at least one labelled voxel", 422)
                info.update(self._store_seg(image_id, image, label_filename, voxels, info["label_info"]))
            result = LocalDatastore.save_label(self, image_id, label_filename, label_tag, info)
        finally:
            for path in temporary:
                if os.path.exists(path):
                    os.unlink(path)
        if label_tag == FINAL:
            seg_uid = info.get("SeriesInstanceUID")
            if seg_uid:
                with self._convert_lock:  # the file just stored is this SEG's content on the image grid
                    self._record_conversion(image_id, seg_uid if os.path.exists(self._label_path(image_id)) else None)
            self.refresh()
        return result

    def _seg_as_label(self, seg_path: str, image_id: str, image: str) -> str:
        return submitted_seg_as_label(seg_path, image_id, image, self.labels)

    def _store_seg(self, image_id: str, image: str, label_file: str, voxels, segments: list[dict]) -> dict:
        """The label as a DICOM SEG of the image's series, stored in the PACS only when it reads back voxel for voxel
        as the label (:func:`lib.datastore.seg_label.seg_of_label`)."""
        from monailabel.datastore.utils.dicom import dicom_web_upload_dcm

        from lib.errors import InputError

        series_dir = os.path.realpath(os.path.join(self._datastore.image_path(), image_id))
        seg_file = seg_of_label(series_dir, image, label_file, voxels, segments, self.labels)
        try:
            seg_uid = dicom_web_upload_dcm(seg_file, self._client)
        finally:
            if os.path.exists(seg_file):
                os.unlink(seg_file)
        if not seg_uid:
            raise InputError("the PACS did not say which series the stored SEG became", 502)
        image_info = self.get_image_info(image_id) or {}
        logger.info(f"label of {image_id} stored in the PACS as SEG {seg_uid} ({[s['name'] for s in segments]})")
        return {"SeriesInstanceUID": seg_uid, "Modality": image_info.get("Modality"),
                "PatientID": image_info.get("PatientID"), "StudyInstanceUID": image_info.get("StudyInstanceUID")}

    # ---- /datastore --------------------------------------------------------------------------------
    def json(self):
        """Every series of the PACS (not only the downloaded ones), with its final label's SEG UID."""
        out = super().json()
        objects = out.setdefault("objects", {})
        index = self._index.get()
        bad = self._seg_problems()
        for uid in self.list_images():
            obj = objects.setdefault(uid, {"image": {"info": {"SeriesInstanceUID": uid}}, "labels": {}})
            segs = [seg for seg in index.get(uid, []) if seg not in bad]
            if segs:  # the newest SEG not known to be unusable
                obj.setdefault("labels", {}).setdefault(FINAL, {})["info"] = {"SeriesInstanceUID": segs[0]}
        return out

