"""A DICOMweb PACS (e.g. Orthanc) as the studies folder: MONAI Label's DICOMweb datastore, made safe to train on.

What this adds to :class:`monailabel.datastore.dicom.DICOMWebDatastore`:

* **labels map to their image**: each SEG series is read once for the CT series it references
  (``ReferencedSeriesSequence``); an image's label is its newest SEG. Asking for the label of a CT series
  (as training does, ``get_label_uri(<CT UID>, "final")``) finds that SEG - MONAI Label downloaded the CT
  itself into the label folder and failed on it, for good, since the bad folder stayed in its cache;
* **labels on the image's grid**: the SEG is put onto the image's voxel grid by world coordinates, nearest
  neighbour (:mod:`lib.datastore.seg_label`), so cropped SEGs train, validate and score correctly; a SEG that
  cannot be used is skipped and named (:meth:`label_problem`);
* **fresh**: the series list and the label index are re-read from the PACS after ``refresh_seconds`` (default
  10 s, ``--conf dicomweb_refresh_seconds``) instead of MONAI Label's 2 hours, and at once after a label is saved
  here, so ``/datastore``, Next Sample, scoring and ``auto_train_after`` see new series and labels; a series with
  a final label is never handed out as unlabelled;
* **checked labels**: a submitted label (NIfTI/NRRD, or OHIF's raw ``.bin``) is checked against its image like
  any other (:func:`lib.datastore.label_check.check_label`) before a SEG is written, and its segments are
  named after the task's labels, so they map back to the same values.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from pydicom.dataset import Dataset

from lib import atomic

logger = logging.getLogger(__name__)

FINAL = "final"


class TTLValue:
    """One value recomputed when older than ``ttl`` seconds (or after :meth:`clear`)."""

    def __init__(self, ttl: float, compute: Callable[[], Any]):
        self.ttl, self.compute = float(ttl), compute
        self._value, self._at = None, -1e18
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._value = self.compute()
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = -1e18


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
        self._seg_refs: dict[str, tuple[str, str] | None] = {}  # SEG UID -> (CT UID, time key); a SEG never changes
        self._problems: dict[str, str] = {}
        self._convert_lock = threading.Lock()
        self._converted_path = os.path.join(self._datastore_path, "seg_labels.json")

    # ---- what is in the PACS ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget the cached series list and label index: the next call asks the PACS."""
        self._series.clear()
        self._index.clear()

    def _query_series(self) -> list[str]:
        datasets = self._client.search_for_series(search_filters=self._search_filter)
        return sorted({_uid(Dataset.from_json(d), "SeriesInstanceUID") for d in datasets} - {""})

    def _seg_reference(self, study_uid: str, seg_uid: str) -> tuple[str, str] | None:
        if seg_uid not in self._seg_refs:
            meta = Dataset.from_json(self._client.retrieve_series_metadata(study_uid, seg_uid)[0])
            ref = meta.get("ReferencedSeriesSequence")
            image = _uid(ref[0], "SeriesInstanceUID") if ref else ""
            when = "".join(str(meta.get(k, "")) for k in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime",
                                                          "InstanceCreationDate", "InstanceCreationTime"))
            self._seg_refs[seg_uid] = (image, when) if image else None
        return self._seg_refs[seg_uid]

    def _query_labels(self) -> dict[str, str]:
        """CT series UID -> the UID of its newest SEG series (only for CT series this datastore lists)."""
        images = set(self._series.get())
        best: dict[str, tuple[str, str]] = {}
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
            image, when = ref
            if image not in images:
                logger.debug(f"SEG {seg_uid} skipped: its series {image} is not in this datastore's list")
                continue
            if image not in best or (when, seg_uid) > (best[image][1], best[image][0]):
                best[image] = (seg_uid, when)
        return {image: seg for image, (seg, _) in best.items()}

    def list_images(self) -> List[str]:
        return list(self._series.get())

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        if label_tag not in (None, "", FINAL):
            return LocalDatastore.get_labeled_images(self, label_tag, labels)
        return sorted(self._index.get())

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
        """Why the image's SEG could not be used as its label (None when it could, or was not tried)."""
        return self._problems.get(image_id)

    # ---- labels as files on the image grid ----------------------------------------------------------
    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        if label_tag != FINAL:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        index = self._index.get()
        if label_id in index:  # a CT series UID (what training asks with)
            image_id, seg_uid = label_id, index[label_id]
        else:  # a SEG series UID (MONAI Label's own calls)
            seg_uid = label_id
            image_id = image_id or next((i for i, s in index.items() if s == seg_uid), "")
        if not image_id:
            return ""
        return self._label_file(image_id, seg_uid) or ""

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
                logger.warning(f"label of {image_id} skipped: SEG {seg_uid}: {exc}")
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
        """Check the label against its image, name its segments after the task's labels, store it (a DICOM SEG in
        the PACS for ``final``), and re-read the label index at once."""
        import nibabel as nib
        from monailabel.datastore.utils.convert import binary_to_image

        from lib.datastore.label_check import check_label
        from lib.datastore.seg_label import segment_info
        from lib.errors import InputError
        from lib.transforms.writer import write_label

        if not self.has_image(image_id):
            raise InputError(f"no series {image_id!r} in the PACS", 404)
        image = self.get_image_uri(image_id)
        temporary = []
        try:
            if label_filename.endswith(".bin"):  # OHIF's raw label volume, in the image's voxel order
                try:
                    label_filename = binary_to_image(image, label_filename)
                except Exception as exc:
                    raise InputError(f"the raw label does not fit the image: {exc}", 422) from None
                temporary.append(label_filename)
            checked = check_label(label_filename, image, self.labels)
            # stored as plain label ids in a NIfTI on the image's grid: the cached label is exactly the SEG's content
            label_filename = write_label(checked.voxels(), nib.load(image).affine, ".nii.gz")
            temporary.append(label_filename)
            info = dict(label_info or {})
            info["label_info"] = segment_info(checked.values, self.labels)  # the values present
            if label_tag == FINAL and not info["label_info"]:
                raise InputError("the label is empty: a DICOM SEG needs at least one labelled voxel", 422)
            result = super().save_label(image_id, label_filename, label_tag, info)
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

    # ---- /datastore --------------------------------------------------------------------------------
    def json(self):
        """Every series of the PACS (not only the downloaded ones), with its final label's SEG UID."""
        out = super().json()
        objects = out.setdefault("objects", {})
        index = self._index.get()
        for uid in self.list_images():
            obj = objects.setdefault(uid, {"image": {"info": {"SeriesInstanceUID": uid}}, "labels": {}})
            if uid in index:
                obj.setdefault("labels", {}).setdefault(FINAL, {})["info"] = {"SeriesInstanceUID": index[uid]}
        return out

