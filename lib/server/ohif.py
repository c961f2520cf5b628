"""The OHIF viewer served at ``/ohif/``, with every asset as itself.

Which build (``--conf ohif``): ``ours`` (the default), the released OHIF viewer with the app's own MONAI Label
extension that ``plugins/ohif/build.sh`` assembles (the set-up runs it where node and npm are installed); or
``stock``, the older build inside the monailabel 0.8.5 wheel with upstream's panel. Without our build the
stock one is served and the log says why.

MONAI Label 0.8.5's route turns the ``/`` of a nested path into ``os.pathsep`` (``:`` on Linux), so every file
below the top folder (``assets/images/*.png``, the decoders' ``*.wasm`` ...) is answered with ``index.html``, and
the browser gets HTML where it wanted an image or WebAssembly. Here a path names a file inside the OHIF folder
(resolved, never outside it) and is sent with its own media type; only a path that is no file - one of OHIF's
own client-side routes such as ``/ohif/monai-label?StudyInstanceUIDs=...`` - gets ``index.html``.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from lib.datastore.names import inside

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/ohif", include_in_schema=False)
OUR_BUILD = Path(__file__).resolve().parents[2] / "plugins" / "ohif" / "build"
CHOICES = ("ours", "stock")
_chosen = {"folder": None}

MEDIA_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
               ".css": "text/css", ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
               ".html": "text/html", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2"}


def stock_folder() -> str:
    import monailabel.endpoints

    return os.path.join(os.path.dirname(os.path.realpath(monailabel.endpoints.__file__)), "static", "ohif")


def choose_build(choice: str = "ours", our_build: Path = OUR_BUILD) -> str:
    """The folder ``/ohif/`` serves from now on (``--conf ohif``); a value other than ours/stock is refused."""
    if choice not in CHOICES:
        raise ValueError(f"--conf ohif must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "ours" and not (our_build / "index.html").is_file():
        logger.warning(f"OHIF: our build is missing ({our_build}); serving the stock monailabel build. Build ours with "
                       "plugins/ohif/build.sh (needs node and npm), or pass --conf ohif stock to silence this")
        choice = "stock"
    _chosen["folder"] = str(our_build) if choice == "ours" else stock_folder()
    logger.info(f"OHIF: serving the {choice} build from {_chosen['folder']}")
    return _chosen["folder"]


def ohif_folder() -> str:
    return _chosen["folder"] or stock_folder()


def ohif_file(path: str) -> str:
    """The file a ``/ohif/<path>`` request gets (see the module docstring)."""
    folder = ohif_folder()
    index = os.path.join(folder, "index.html")
    if not os.path.exists(index):
        raise HTTPException(status_code=404, detail="this monailabel install has no OHIF viewer")
    if path:
        candidate = os.path.join(folder, *[p for p in path.split("/") if p])
        if os.path.isfile(candidate) and inside(folder, candidate):
            return candidate
        if os.path.splitext(path)[1] and not path.endswith(".html"):
            raise HTTPException(status_code=404, detail=f"no OHIF file {path}")
    return index


def media_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return MEDIA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


@router.get("/{path:path}")
def get_ohif(path: str):
    """The viewer's static files are public (a browser sends no token for them); every data route it calls is not
    (:mod:`lib.server.access`)."""
    file = ohif_file(path)
    return FileResponse(file, media_type=media_type(file))
