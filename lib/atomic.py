"""The one atomic file writer: a temporary file in the target folder, then ``os.replace``.

Every file the project publishes goes through :func:`write_with` (labels, the datastore file, weights,
architecture codes, engines and compiled packages, JSON state, pictures). A reader (the MONAI Label datastore
watches its folder, the server reloads published weights) never sees half a file, and an interrupted run
leaves either the old file or the new one. Temporary names start with a dot and end in ``.tmp`` (or the
suffix a library insists on) so no image scanner mistakes them for studies.

Also the one file hasher (:func:`sha256_file`), so a file's identity is computed one way everywhere: label
versions store it whole, and the model checksum (:func:`lib.networks.factory.file_checksum`) is its prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def sha256_file(path) -> str:
    """The sha256 of a file's bytes (hex, whole), read in 1 MiB blocks so a large file is never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path, data, indent: int = 4) -> None:
    """JSON (numpy numbers and arrays as plain numbers and lists)."""
    write_bytes(path, (json.dumps(data, indent=indent, default=_json_default) + "\n").encode())


def read_json(path, default=None):
    """The JSON in ``path``, or ``default`` when the file is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def torch_save(obj, path) -> None:
    import torch

    write_with(path, lambda tmp: torch.save(obj, tmp))


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
