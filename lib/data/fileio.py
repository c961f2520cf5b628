"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader (the MONAI Label datastore watches its folder) never sees half a file, and an interrupted run
leaves either the old file or the new one. Temporary names start with a dot and end in ``.tmp`` so no
image scanner mistakes them for studies.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def _temp_in(path: Path, suffix: str = ".tmp") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    return tmp


def _finish(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    path = Path(path)
    tmp = _temp_in(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except BaseException:
        os.unlink(tmp)
        raise
    _finish(tmp, path)


def write_json(path, data) -> None:
    write_bytes(path, (json.dumps(data, indent=4) + "\n").encode())


def write_with(path, writer, suffix: str = ".tmp") -> None:
    """``writer(tmp_path)`` writes the file (for libraries that only take a file name)."""
    path = Path(path)
    tmp = _temp_in(path, suffix)
    try:
        writer(tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _finish(tmp, path)


def copy_file(src, dst) -> None:
    write_with(dst, lambda tmp: shutil.copyfile(src, tmp))


def symlink(src, dst) -> None:
    """Point ``dst`` at the absolute path of ``src`` (replacing what was there)."""
    dst = Path(dst)
    target = os.path.abspath(src)

    def make(tmp):
        os.unlink(tmp)
        os.symlink(target, tmp)

    write_with(dst, make)
