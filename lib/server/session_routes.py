"""Sessions: 3D Slicer's path for a volume that is not in the datastore (``PUT /session/``, then inference with
``session_id``), bounded in number, size, idle time and per user (:class:`lib.server.uploads.SessionLimits`)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type

from lib.datastore.label_files import check_volume_file
from lib.datastore.names import check_inside, check_name
from lib.errors import InputError, http_error
from lib.server import uploads
from lib.server.roles import USER
from lib.server.route_helpers import answers
from lib.transforms.load import check_shape

logger = logging.getLogger(__name__)
router = APIRouter()


# ---- sessions (Slicer's path for a volume that is not in the datastore) ------------------------------
@router.put("/session/", summary="Create a session with an uploaded volume (multipart field 'files': one volume "
                                  "file or the files of a DICOM series)")
async def create_session(request: Request, uncompress: bool = False, expiry: int = 0,
                         user: User = Depends(RBAC(USER))):
    """Bounded (:class:`lib.server.uploads.SessionLimits`): 503 when the server holds ``session_max_count`` live
    sessions (before the upload is read), 413 as soon as the upload passes ``session_max_mb`` (nothing is kept).
    ``async`` so that the body is parsed as it streams in, never spooled whole first; the file work runs in the
    thread pool."""
    from starlette.concurrency import run_in_threadpool

    try:
        instance = app_instance()
        sessions = instance.sessions()
        if sessions is None:
            raise HTTPException(status_code=406, detail="sessions are not enabled on this server")
        if uncompress:
            raise InputError("uncompress is not supported: upload the volume file(s) themselves", 400)
        if expiry < 0:
            raise InputError("expiry must be 0 (the server's default) or a number of seconds", 400)
        limits = uploads.SessionLimits.from_conf(instance.conf)
        owner = who()  # None with authentication off: then only the server-wide limits apply
        await run_in_threadpool(uploads.check_session_room, sessions, limits, owner)
        with uploads.upload_folder() as folder:
            files = await uploads.receive_files(request, folder, limits.max_bytes)
            if not files:
                raise InputError("no file uploaded (multipart field 'files')", 400)
            session_id, info = await run_in_threadpool(_add_session, sessions, limits, folder, files, expiry, owner)
    except Exception as exc:
        raise http_error(exc, "create_session", logger) from None
    logger.info(f"Session {session_id}: {info.image}")
    shown = {k: v for k, v in info.to_json().items() if k not in ("path", "image")}  # server paths stay inside
    return {"session_id": session_id, "session_info": shown}


@router.get("/session/{session_id}", summary="A session's details (image=true: its volume)")
@answers
def get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = Depends(RBAC(USER))):
    path, info = session_image(session_id, use=update_ts or image)
    if image:
        return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))
    return {k: v for k, v in info.items() if k not in ("path", "image")}  # server paths stay inside


def who() -> str:
    """The verified user's name, or "" with authentication off."""
    from lib.server.access import current_identity

    identity = current_identity()
    return identity.username if identity is not None else ""


def _add_session(sessions, limits, folder: str, files: list, expiry: int, user: str):
    data = uploads.name_uploads(folder, files)
    if os.path.isfile(data):
        geometry = check_volume_file(data, "the uploaded volume")
        # the served task's own voxel limit (--conf max_voxels), from the header: never kept, never read
        check_shape(geometry.shape, "the uploaded volume", replace(app_instance().task_config.limits, min_slices=1))
    return uploads.add_session(sessions, limits, data, expiry, user)


def session_image(session_id: str, use: bool = True) -> tuple[str, dict]:
    """The volume of one of this server's sessions and its details (404 when unknown or expired: unused for
    ``session_idle_seconds``); ``use``: this counts as using it, which keeps it alive."""
    check_name(session_id, "session id")
    instance = app_instance()
    sessions = instance.sessions()
    if sessions is None:
        raise HTTPException(status_code=406, detail="sessions are not enabled on this server")
    limits = uploads.SessionLimits.from_conf(instance.conf)
    uploads.live_sessions(sessions, limits)  # expired sessions go (this one too)
    info = sessions.get_session(session_id, update_ts=False)
    if info and uploads.session_expired(info, limits):
        sessions.remove_session(session_id)
        info = None
    if not info:
        raise InputError(f"session '{session_id}' not found (expired or never created): upload the volume again", 404)
    if use:
        info = sessions.get_session(session_id)  # used now
    return check_inside(sessions.store_path, info.image, "session image"), info.to_json()
