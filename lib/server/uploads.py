"""Files a request uploads: each in a private temporary folder removed when the request ends, whatever
happens, and registered as *trusted* while it exists, so inference reads only datastore images, this
server's session files and the request's own upload, never an arbitrary server path."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

from lib.datastore.label_check import file_extension

_lock = threading.Lock()
_trusted: set[str] = set()
PREFIX = "dints-label-upload-"


def _safe_extension(filename: str | None, default: str) -> str:
    ext = file_extension(filename or "") if filename else default
    ext = ext.lower()
    return ext if ext and all(c.isalnum() or c == "." for c in ext) and len(ext) <= 12 else default


@contextmanager
def upload_folder() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix=PREFIX)
    try:
        yield folder
    finally:
        with _lock:
            for path in [p for p in _trusted if p.startswith(folder + os.sep)]:
                _trusted.discard(path)
        shutil.rmtree(folder, ignore_errors=True)


def save_upload(folder: str, upload, name: str = "upload", default_ext: str = ".nii.gz", trusted: bool = True) -> str:
    """Write an ``UploadFile`` into ``folder`` under a name of our choosing (the client's name is not a path)."""
    path = os.path.join(folder, name + _safe_extension(upload.filename, default_ext))
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    if trusted:
        trust(path)
    return path


def trust(path: str) -> None:
    with _lock:
        _trusted.add(os.path.realpath(path))


def untrust(path: str) -> None:
    with _lock:
        _trusted.discard(os.path.realpath(path))


def is_trusted(path: str) -> bool:
    with _lock:
        return os.path.realpath(path) in _trusted
