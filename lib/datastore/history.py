"""Label versions: every save of an (image, tag) label is kept, immutable, with who made it and when.

Layout, inside the studies folder (hidden, so no datastore scan mistakes it for studies)::

    .label_history/<tag>/<image id>/r00001.nii.gz     one file per version, never modified
    .label_history/<tag>/<image id>/index.json        the versions, oldest first

Write order (crash-safe against a kill at any moment): the version file is written to a temporary name
and renamed into place, then the index is rewritten the same way, and only then is the current label in
``labels/<tag>/`` replaced. A crash leaves either the old state or an index one version ahead of the
current file, which :meth:`LabelHistory.reconcile` completes at the next start.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from lib import atomic
from lib.datastore.names import check_inside, check_name

HISTORY_DIR = ".label_history"
INDEX = "index.json"


class LabelHistory:
    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        os.makedirs(self.root, exist_ok=True)

    # ---- paths and index ---------------------------------------------------------------------------
    def folder(self, tag: str, image_id: str) -> str:
        check_name(tag, "label tag")
        check_name(image_id, "image id")
        return check_inside(self.root, os.path.join(self.root, tag, image_id), "label history folder")

    def index(self, tag: str, image_id: str) -> dict[str, Any]:
        path = os.path.join(self.folder(tag, image_id), INDEX)
        if not os.path.exists(path):
            return {"image": image_id, "tag": tag, "versions": []}
        with open(path) as f:
            return json.load(f)

    def _write_index(self, tag: str, image_id: str, index: dict) -> None:
        atomic.write_json(os.path.join(self.folder(tag, image_id), INDEX), index)

    def versions(self, tag: str, image_id: str) -> list[dict]:
        return list(self.index(tag, image_id)["versions"])

    def head(self, tag: str, image_id: str) -> dict | None:
        versions = self.versions(tag, image_id)
        return versions[-1] if versions else None

    def revision(self, tag: str, image_id: str) -> int:
        """The current revision: 0 when the label has no history yet."""
        head = self.head(tag, image_id)
        return int(head["rev"]) if head else 0

    def file_of(self, tag: str, image_id: str, entry: dict) -> str | None:
        """The file of a version entry; None for a deletion."""
        return None if entry.get("deleted") else os.path.join(self.folder(tag, image_id), entry["file"])

    def version_path(self, tag: str, image_id: str, rev: int) -> tuple[dict, str | None]:
        for entry in self.versions(tag, image_id):
            if int(entry["rev"]) == int(rev):
                return entry, self.file_of(tag, image_id, entry)
        raise KeyError(rev)

    def tracked(self) -> list[tuple[str, str]]:
        """Every (tag, image id) with a history."""
        out = []
        for tag in sorted(os.listdir(self.root)):
            tdir = os.path.join(self.root, tag)
            if os.path.isdir(tdir):
                out += [(tag, i) for i in sorted(os.listdir(tdir)) if os.path.isfile(os.path.join(tdir, i, INDEX))]
        return out

    # ---- writing -----------------------------------------------------------------------------------
    def _append(self, tag: str, image_id: str, index: dict, rev: int, fields: dict, meta: dict) -> dict:
        entry = {"rev": rev, **fields, "ts": round(time.time(), 3),
                 **{k: v for k, v in meta.items() if v not in (None, "")}}
        index["versions"].append(entry)
        self._write_index(tag, image_id, index)
        return entry

    @staticmethod
    def _next_rev(index: dict) -> int:
        return (int(index["versions"][-1]["rev"]) if index["versions"] else 0) + 1

    def add(self, tag: str, image_id: str, src: str, ext: str, meta: dict) -> dict:
        """Store ``src`` as the next version (file first, index second) and return its entry."""
        index = self.index(tag, image_id)
        rev = self._next_rev(index)
        name = f"r{rev:05d}{ext}"
        path = os.path.join(self.folder(tag, image_id), name)
        atomic.copy_file(src, path)
        return self._append(tag, image_id, index, rev,
                            {"file": name, "sha256": atomic.sha256_file(path), "size": os.path.getsize(path)}, meta)

    def add_deletion(self, tag: str, image_id: str, meta: dict) -> dict:
        index = self.index(tag, image_id)
        return self._append(tag, image_id, index, self._next_rev(index), {"deleted": True}, meta)

    def remove_strays(self, tag: str, image_id: str) -> list[str]:
        """Delete temporary files and version files the index does not name (a save killed before its index)."""
        folder = self.folder(tag, image_id)
        named = {e.get("file") for e in self.versions(tag, image_id)} | {INDEX}
        removed = []
        for name in os.listdir(folder):
            if name not in named:
                path = os.path.join(folder, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                removed.append(name)
        return removed
