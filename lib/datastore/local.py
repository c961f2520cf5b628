"""MONAI Label's local datastore with the annotation data path made safe.

* ids and tags are checked names (:mod:`lib.datastore.names`) on every call, and every file path is
  checked to resolve inside the studies folder;
* a submitted label is checked against its image (:mod:`lib.datastore.label_check`) before anything is
  written;
* every save, restore or delete of a label is a new version in :mod:`lib.datastore.history`, with an
  optional expected revision (a stale one is a 409);
* ``datastore_v2.json`` and every file are written atomically, and the in-memory model is changed under
  one lock, so concurrent requests and the folder watcher cannot interleave;
* an upload never replaces an existing image (409).

The stock REST calls (Slicer's and OHIF's) reach these methods unchanged; the routes in
:mod:`lib.server.datastore_routes` add the version calls.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

from lib import atomic
from lib.datastore.history import HISTORY_DIR, LabelHistory
from lib.datastore.label_files import LABEL_EXTENSIONS, check_volume_file, file_extension, write_like
from lib.datastore.label_check import check_label
from lib.datastore.names import check_inside, check_name, name_problem
from lib.errors import InputError

logger = logging.getLogger(__name__)


DELETED_DIR = ".deleted"  # removed images, kept for recovery


class AnnotationDatastore(LocalDatastore):
    def __init__(self, datastore_path: str, labels: dict[str, int], repair: bool = True, **kwargs):
        """``repair``: finish half-done saves at start (the web server; not its training/scoring child
        processes, which only read and must not race the server's writes)."""
        self._mutex = threading.RLock()
        self.model_labels = dict(labels)
        self.studies_dir = os.path.realpath(datastore_path)
        super().__init__(datastore_path, **kwargs)
        self.history = LabelHistory(os.path.join(self.studies_dir, HISTORY_DIR))
        bad = [i for i in self.list_images() if name_problem(i)]
        if bad:
            logger.warning(f"{len(bad)} image(s) have ids the server refuses in requests (rename the files): {bad[:5]}")
        if repair:
            self.reconcile_history()

    # ---- the datastore file and the watcher --------------------------------------------------------
    def _update_datastore_file(self, lock=True):
        """As MONAI Label's, but written atomically: a kill -9 mid-write cannot corrupt the index."""
        def write():
            self._ignore_event_config = True
            data = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic.write_bytes(self._datastore_config_path, data.encode())
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        from filelock import FileLock

        with self._mutex:
            if lock:
                with FileLock(self._lock_file):
                    write()
            else:
                write()

    def refresh(self):
        with self._mutex:
            super().refresh()

    # ---- paths -------------------------------------------------------------------------------------
    def _label_dir(self, tag: str) -> str:
        check_name(tag, "label tag")
        return check_inside(self.studies_dir, self._datastore.label_path(tag), "label folder")

    def _current_label(self, image_id: str, tag: str) -> str | None:
        """The label file of (image, tag) on disk, whether or not the in-memory model knows it yet."""
        folder = self._label_dir(tag)
        obj = self._datastore.objects.get(image_id)
        known = obj.labels.get(tag) if obj else None
        candidates = ([known.ext] if known else []) + list(LABEL_EXTENSIONS)
        for ext in candidates:
            path = os.path.join(folder, image_id + ext)
            if os.path.isfile(path):
                return path
        return None

    def image_path(self, image_id: str) -> str:
        """The image file of a datastore id: 400 for a bad id, 404 for an unknown one."""
        check_name(image_id, "image id")
        uri = self.get_image_uri(image_id)
        if not uri:
            raise InputError(f"image '{image_id}' is not in the datastore", 404)
        return check_inside(self.studies_dir, uri, "image path")

    # ---- images ------------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        ext = file_extension(image_filename)
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)] if ext else ""
        check_name(image_id, "image id")
        allowed = [e.replace("*", "") for e in self._extensions]
        if ext not in allowed:
            raise InputError(f"images must be one of {', '.join(allowed)}; got '{ext or 'no extension'}'", 415)
        check_volume_file(image_filename)
        name = image_id + ext
        dest = check_inside(self.studies_dir, os.path.join(self._datastore.image_path(), name), "image path")
        with self._mutex:
            existing = [image_id + e for e in allowed if os.path.exists(os.path.join(self._datastore.image_path(), image_id + e))]
            if image_id in self._datastore.objects or existing:
                raise InputError(f"image '{image_id}' already exists; delete it first or upload it under another id", 409)
            atomic.copy_file(image_filename, dest)
            info = dict(image_info or {})
            info.update({"ts": int(time.time()), "name": name})
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file()
        logger.info(f"Added image {image_id} ({name})")
        return image_id

    def remove_image(self, image_id: str, user: str | None = None) -> str:
        """Take the image out of the datastore without destroying anything: the file moves to
        ``<studies>/.deleted/<id>.<time><ext>`` (put it back to restore it), the current labels are removed and their
        histories stay (the labels can be restored). Returns where the image went."""
        path = self.image_path(image_id)
        ext = file_extension(path)
        trash = os.path.join(self.studies_dir, DELETED_DIR)
        with self._mutex:
            for tag in list(self._datastore.objects[image_id].labels):
                self.remove_label(image_id, tag, user=user)
            os.makedirs(trash, exist_ok=True)
            kept = os.path.join(trash, f"{image_id}.{time.strftime('%Y%m%d-%H%M%S')}{ext}")
            os.replace(path, kept)
            super().remove_image(image_id)
            self.refresh()  # gone from every listing now, not when the file watcher notices
        logger.info(f"Image {image_id} removed by {user or 'unknown'}; kept as {kept}")
        return kept

    # ---- labels ------------------------------------------------------------------------------------
    def _sync_current(self, image_id: str, tag: str) -> dict | None:
        """Make the history's head describe the current file: a label written by hand (or from before
        the history existed) becomes a version first, so the next save cannot destroy it."""
        current = self._current_label(image_id, tag)
        if current is None:
            return None
        head = self.history.head(tag, image_id)
        if head is not None and not head.get("deleted") and head["sha256"] == atomic.sha256_file(current):
            return head
        entry = self.history.add(tag, image_id, current, file_extension(current), {"source": "found on disk"})
        logger.info(f"Label {image_id}/{tag}: the file on disk kept as revision {entry['rev']}")
        return entry

    def _publish(self, image_id: str, tag: str, version_file: str, entry: dict, info: dict) -> None:
        """Make ``version_file`` the current label (atomically) and record it in the datastore file."""
        folder = self._label_dir(tag)
        os.makedirs(folder, exist_ok=True)
        ext = file_extension(version_file)
        dest = check_inside(self.studies_dir, os.path.join(folder, image_id + ext), "label path")
        atomic.copy_file(version_file, dest)
        for other in LABEL_EXTENSIONS:  # a label submitted in another format replaces the old current file
            stale = os.path.join(folder, image_id + other)
            if other != ext and os.path.exists(stale):
                os.unlink(stale)
        obj = self._datastore.objects[image_id]
        label_info = {k: v for k, v in info.items() if k != "label_info"}
        label_info.update({"ts": int(entry["ts"]), "name": image_id + ext, "rev": entry["rev"]})
        obj.labels[tag] = DataModel(info=label_info, ext=ext)
        try:
            self._update_datastore_file()
        except OSError as exc:  # the label and its version are stored; the folder scan finds them again
            logger.error(f"datastore file not updated after saving {image_id}/{tag} ({exc}); the label is stored")

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   expected_rev: int | None = None) -> str:
        """Check, version and publish a label. ``expected_rev``: the revision the client edited (409 if stale)."""
        tag = label_tag or "final"
        check_name(tag, "label tag")
        image = self.image_path(image_id)
        info = dict(label_info or {})
        checked = check_label(label_filename, image, self.model_labels, info.get("label_info"))
        meta = {k: info.get(k) for k in ("user", "client_id", "model", "source")}
        meta["values"] = {str(k): v for k, v in checked.values.items()}
        with self._mutex:
            try:
                self._sync_current(image_id, tag)
                current = self.history.revision(tag, image_id)
                if expected_rev is not None and int(expected_rev) != current:
                    raise InputError(f"the label of '{image_id}' ({tag}) is at revision {current}, not {expected_rev}: "
                                     "someone saved it after you loaded it; reload it and submit again", 409)
                src = label_filename
                if checked.data is not None:
                    src = os.path.join(self.history.folder(tag, image_id), f".rewrite{checked.extension}")
                    os.makedirs(os.path.dirname(src), exist_ok=True)
                    write_like(label_filename, checked.data, src)
                try:
                    entry = self.history.add(tag, image_id, src, checked.extension, meta)
                finally:
                    if src != label_filename and os.path.exists(src):
                        os.unlink(src)
                self._publish(image_id, tag, self.history.file_of(tag, image_id, entry), entry, info)
            except OSError as exc:
                raise InputError(f"the label could not be stored ({exc.strerror}: {exc.filename}); "
                                 "the previous version is unchanged", 503) from None
        logger.info(f"Saved label {image_id}/{tag} revision {entry['rev']} (values {checked.values})")
        return image_id

    def remove_label(self, label_id: str, label_tag: str, user: str | None = None) -> None:
        check_name(label_tag, "label tag")
        self.image_path(label_id)
        with self._mutex:
            current = self._current_label(label_id, label_tag)
            if current is None:
                raise InputError(f"image '{label_id}' has no '{label_tag}' label", 404)
            self._sync_current(label_id, label_tag)
            self.history.add_deletion(label_tag, label_id, {"user": user})
            os.unlink(current)
            obj = self._datastore.objects.get(label_id)
            if obj:
                obj.labels.pop(label_tag, None)
            self._update_datastore_file()

    def label_versions(self, image_id: str, tag: str) -> dict[str, Any]:
        self.image_path(image_id)
        check_name(tag, "label tag")
        with self._mutex:
            self._sync_current(image_id, tag)
            versions = self.history.versions(tag, image_id)
        return {"image": image_id, "tag": tag, "revision": int(versions[-1]["rev"]) if versions else 0,
                "versions": versions}

    def label_version_file(self, image_id: str, tag: str, rev: int) -> tuple[dict, str]:
        self.image_path(image_id)
        try:
            entry, path = self.history.version_path(tag, image_id, int(rev))
        except KeyError:
            raise InputError(f"label '{image_id}' ({tag}) has no revision {rev}", 404) from None
        if path is None:
            raise InputError(f"revision {rev} of '{image_id}' ({tag}) is a deletion: it holds no label", 404)
        return entry, path

    def restore_label(self, image_id: str, tag: str, rev: int, user: str | None = None,
                      expected_rev: int | None = None) -> dict:
        """A new version with the content of revision ``rev`` (nothing is rewritten or dropped)."""
        entry, path = self.label_version_file(image_id, tag, rev)
        self.save_label(image_id, path, tag, {"user": user, "source": f"restore of revision {rev}"}, expected_rev)
        return self.history.head(tag, image_id)

    def label_revision(self, image_id: str, tag: str) -> int:
        with self._mutex:
            self._sync_current(image_id, tag)
            return self.history.revision(tag, image_id)

    # ---- start-up ----------------------------------------------------------------------------------
    def reconcile_history(self) -> None:
        """Finish what a killed save or delete left half done, so index and current label agree."""
        with self._mutex:
            changed = False
            for tag, image_id in self.history.tracked():
                if name_problem(tag) or name_problem(image_id):
                    continue
                stray = self.history.remove_strays(tag, image_id)
                if stray:
                    logger.warning(f"Label history {image_id}/{tag}: removed unfinished files {stray}")
                versions = self.history.versions(tag, image_id)
                if not versions or image_id not in self._datastore.objects:
                    continue
                head = versions[-1]
                current = self._current_label(image_id, tag)
                content = [v for v in versions if not v.get("deleted")]
                if head.get("deleted"):
                    if current and content and atomic.sha256_file(current) == content[-1]["sha256"]:
                        os.unlink(current)  # a delete killed after its index entry
                        self._datastore.objects[image_id].labels.pop(tag, None)
                        changed = True
                    elif current:
                        self._sync_current(image_id, tag)
                    continue
                head_file = self.history.file_of(tag, image_id, head)
                if current is None:
                    finish = True  # the first save killed before the current file was written
                else:
                    digest = atomic.sha256_file(current)
                    if digest == head["sha256"]:
                        finish = False
                    elif len(content) > 1 and digest == content[-2]["sha256"]:
                        finish = True  # killed between the index and the current file
                    else:
                        self._sync_current(image_id, tag)  # edited by hand: keep it as a new version
                        continue
                if finish:
                    logger.warning(f"Label {image_id}/{tag}: completing revision {head['rev']} left by an interrupted save")
                    self._publish(image_id, tag, head_file, head, {})
                elif tag in self._datastore.objects[image_id].labels:
                    info = self._datastore.objects[image_id].labels[tag].info
                    if info.get("rev") != head["rev"]:
                        info["rev"] = head["rev"]
                        changed = True
            if changed:
                self._update_datastore_file()


def image_uri(datastore, image_id: str) -> str:
    """The image of a datastore id in this datastore or a remote one (DICOMweb): 400 for a bad id, 404 for
    an unknown one."""
    if isinstance(datastore, AnnotationDatastore):
        return datastore.image_path(image_id)
    check_name(image_id, "image id")
    if hasattr(datastore, "has_image") and not datastore.has_image(image_id):
        raise InputError(f"image '{image_id}' is not in the datastore", 404)
    uri = datastore.get_image_uri(image_id)
    if not uri:
        raise InputError(f"image '{image_id}' is not in the datastore", 404)
    return uri
