"""The app's versions of MONAI Label's data-path routes, registered in front of the stock ones.

Same paths, parameters and answers as MONAI Label 0.8.5 (the Slicer and OHIF plugins call them
unchanged), with what the stock routes lack: names checked, uploads written to private temporary
folders removed after every request, labels checked and versioned, and every route a plain ``def``, so
FastAPI runs it in its thread pool and a long inference never holds up ``/info`` or a label submit.
New: the label version calls ``GET /datastore/label/versions``, ``GET /datastore/label/version`` and
``POST /datastore/label/restore`` (README, "REST API").
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Dict, Optional

import numpy as np
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type

from lib.datastore.label_check import check_volume_file
from lib.datastore.local import image_uri
from lib.datastore.names import check_inside, check_name
from lib.errors import InputError, http_error
from lib.server import uploads
from lib.transforms.load import DEFAULT_MAX_VOXELS

logger = logging.getLogger(__name__)

USER = settings.MONAI_LABEL_AUTH_ROLE_USER
ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
# request parameters that name files: the route sets them, a client cannot
PATH_KEYS = ("image", "label", "session", "model")


def answers(fn):
    """Turn the app's errors into HTTP answers with a message (never a stack trace, never a bare 500)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise http_error(exc, fn.__name__, logger) from None

    return wrapper


def _json_object(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}", 400) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}", 400)
    return value


def _revision(rev: Optional[int], if_match: Optional[str]) -> Optional[int]:
    """The revision a client says it edited: ``?rev=N`` or an ``If-Match: "N"`` header (``*``: any)."""
    if rev is not None:
        return int(rev)
    if not if_match or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise InputError(f"If-Match must be a label revision (a number), got {if_match!r}", 400) from None


def _etag(rev: int) -> dict:
    return {"ETag": f'"{rev}"'}


def _datastore():
    ds = app_instance().datastore()
    if not hasattr(ds, "history"):
        raise InputError("label versions need the local studies folder datastore", 501)
    return ds


router = APIRouter(prefix=settings.MONAI_LABEL_API_STR)


# ---- datastore: images ------------------------------------------------------------------------------
@router.put("/datastore/", include_in_schema=False)
@router.put("/datastore/image", summary="Upload a new image (never replaces an existing one)")
@answers
def add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
              user: User = Depends(RBAC(ANNOTATOR))):
    info = _json_object(params, "params")
    if user.username:
        info["user"] = user.username
    with uploads.upload_folder() as folder:
        path = uploads.save_upload(folder, file, "image", trusted=False)
        if not image:
            ext = os.path.basename(path)[len("image"):]
            client = os.path.basename(file.filename or "")
            image = client[: -len(ext)] if ext and client.lower().endswith(ext) else ""
            if not image:
                raise InputError("no image id: pass ?image=ID or upload a file named ID.nii.gz", 400)
        check_name(image, "image id")
        image_id = app_instance().datastore().add_image(image, path, info)
    return {"image": image_id}


@router.delete("/datastore/", include_in_schema=False)
@router.delete("/datastore/image", summary="Remove an image and its current labels (the file and the label "
                                            "histories are kept for recovery)")
@answers
def remove_image(id: str, user: User = Depends(RBAC(ADMIN))):
    from lib.datastore.local import AnnotationDatastore

    ds = app_instance().datastore()
    image_uri(ds, id)
    if isinstance(ds, AnnotationDatastore):
        kept = ds.remove_image(id, user=user.username)
        return {"kept_as": os.path.relpath(kept, ds.studies_dir)}
    ds.remove_image(id)
    return {}


def _image_file(image: str) -> str:
    uri = image_uri(app_instance().datastore(), image)
    if not os.path.isfile(uri):
        raise InputError(f"image '{image}' is not in the datastore", 404)
    return uri


@router.head("/datastore/image", summary="Check that an image exists")
@answers
def check_image(image: str, check_sum: Optional[str] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.datastore import download_image

    _image_file(image)
    return download_image(image, check_only=True, check_sum=check_sum)


@router.get("/datastore/image", summary="Download an image")
@answers
def download_image(image: str, user: User = Depends(RBAC(USER))):
    path = _image_file(image)
    return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))


@router.get("/datastore/dataset", summary="Download the labelled dataset as a ZIP archive")
@answers
def download_dataset(limit_cases: Optional[int] = None, user: User = Depends(RBAC(ANNOTATOR))):
    from monailabel.endpoints.datastore import download_dataset as stock

    if not app_instance().datastore().datalist():
        raise InputError("no image has a final label yet: nothing to archive", 404)
    return stock(limit_cases)


# ---- datastore: labels ------------------------------------------------------------------------------
@router.put("/datastore/label", summary="Save a label (checked against its image; the previous version is kept)")
@answers
def save_label(image: str, params: str = Form("{}"), tag: str = "final", label: UploadFile = File(...),
               rev: Optional[int] = None, if_match: Optional[str] = Header(None),
               user: User = Depends(RBAC(ANNOTATOR))):
    tag = check_name(tag or "final", "label tag")
    check_name(image, "image id")
    info = _json_object(params, "params")
    if user.username and not info.get("user"):
        info["user"] = user.username
    expected = _revision(rev, if_match)
    instance = app_instance()
    ds = instance.datastore()
    with uploads.upload_folder() as folder:
        path = uploads.save_upload(folder, label, "label", trusted=False)
        if hasattr(ds, "history"):
            label_id = ds.save_label(image, path, tag, info, expected_rev=expected)
        else:
            label_id = ds.save_label(image, path, tag, info)
    res = instance.on_save_label(image, label_id) or {}
    res.update({"image": image, "label": label_id})
    headers = {}
    if hasattr(ds, "history"):
        res["revision"] = ds.history.revision(tag, image)
        headers = _etag(res["revision"])
    return JSONResponse(res, headers=headers)


@router.delete("/datastore/label", summary="Remove the current label (it stays in the label's history)")
@answers
def remove_label(id: str, tag: str, user: User = Depends(RBAC(ADMIN))):
    ds = app_instance().datastore()
    if hasattr(ds, "history"):
        ds.remove_label(id, check_name(tag, "label tag"), user=user.username)
    else:
        ds.remove_label(check_name(id), check_name(tag, "label tag"))
    return {}


def _label_file(image: str, tag: str) -> tuple[str, dict]:
    check_name(image, "image id")
    check_name(tag, "label tag")
    ds = app_instance().datastore()
    path = ds.get_label_uri(image, tag)
    if not path or not os.path.isfile(path):
        raise InputError(f"image '{image}' has no '{tag}' label", 404)
    if hasattr(ds, "history"):
        check_inside(ds.studies_dir, path, "label path")
        return path, _etag(ds.label_revision(image, tag))
    return path, {}


@router.head("/datastore/label", summary="Check that a label exists")
@answers
def check_label(image: str, tag: str, user: User = Depends(RBAC(USER))):
    _, headers = _label_file(image, tag)
    return JSONResponse({}, headers=headers)


@router.get("/datastore/label", summary="Download the current label (its revision in the ETag header)")
@answers
def download_label(label: str, tag: str, user: User = Depends(RBAC(USER))):
    path, headers = _label_file(label, tag)
    return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path), headers=headers)


@router.get("/datastore/label/versions", summary="List every version of a label, oldest first")
@answers
def label_versions(image: str, tag: str = "final", user: User = Depends(RBAC(USER))):
    return _datastore().label_versions(image, check_name(tag, "label tag"))


@router.get("/datastore/label/version", summary="Download one version of a label")
@answers
def download_label_version(image: str, rev: int, tag: str = "final", user: User = Depends(RBAC(USER))):
    entry, path = _datastore().label_version_file(image, check_name(tag, "label tag"), rev)
    ext = os.path.basename(path)[len(f"r{int(rev):05d}"):]
    return FileResponse(path, media_type=get_mime_type(path), filename=f"{image}.r{int(rev)}{ext}", headers=_etag(int(rev)))


@router.post("/datastore/label/restore", summary="Make an earlier version the current label (as a new version)")
@answers
def restore_label_version(image: str, rev: int, tag: str = "final", if_match: Optional[str] = Header(None),
                          user: User = Depends(RBAC(ANNOTATOR))):
    instance = app_instance()
    ds = _datastore()
    entry = ds.restore_label(image, check_name(tag, "label tag"), rev, user=user.username,
                             expected_rev=_revision(None, if_match))
    res = instance.on_save_label(image, image) or {}
    res.update({"image": image, "tag": tag, "revision": entry["rev"], "restored": int(rev)})
    return JSONResponse(res, headers=_etag(entry["rev"]))


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
    path, info = session_image(session_id) if update_ts or image else _session_info(session_id)
    if image:
        return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))
    return {k: v for k, v in info.items() if k not in ("path", "image")}  # server paths stay inside


def _session_info(session_id: str) -> tuple[None, dict]:
    """A session's details without marking it used (404 when unknown or expired)."""
    check_name(session_id, "session id")
    sessions = app_instance().sessions()
    info = sessions.get_session(session_id, update_ts=False) if sessions is not None else None
    if info is None or uploads.session_expired(info, uploads.SessionLimits.from_conf(app_instance().conf)):
        raise InputError(f"session '{session_id}' not found (expired or never created)", 404)
    return None, info.to_json()


def who() -> str:
    """The verified user's name, or "" with authentication off."""
    from lib.server.access import current_identity

    identity = current_identity()
    return identity.username if identity is not None else ""


def _add_session(sessions, limits, folder: str, files: list, expiry: int, user: str):
    data = uploads.name_uploads(folder, files)
    if os.path.isfile(data):
        geometry = check_volume_file(data, "the uploaded volume")
        most = int(float(app_instance().conf.get("max_voxels", DEFAULT_MAX_VOXELS)))
        voxels = int(np.prod(geometry.shape, dtype=np.float64))
        if voxels > most:  # refused from its header: never kept, never read
            raise InputError(f"the uploaded volume's header declares {voxels} voxels, more than this server takes "
                             f"(--conf max_voxels {most})", 413)
    return uploads.add_session(sessions, limits, data, expiry, user)


def session_image(session_id: str) -> tuple[str, dict]:
    """The volume of one of this server's sessions (404 when unknown or expired: unused for
    ``session_idle_seconds``); using it keeps it alive."""
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
    info = sessions.get_session(session_id)  # used now
    return check_inside(sessions.store_path, info.image, "session image"), info.to_json()


# ---- inference ---------------------------------------------------------------------------------------
@router.post("/infer/{model}", summary="Run inference for a model")
@answers
def run_inference(background_tasks: BackgroundTasks, model: str, image: str = "", session_id: str = "",
                  params: str = Form("{}"), file: UploadFile = File(None), label: UploadFile = File(None),
                  output: Optional[str] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.infer import send_response

    instance = app_instance()
    check_name(model, "model name")
    if model not in instance._infers:
        raise InputError(f"no model '{model}': choose one of {sorted(instance._infers)}", 404)
    if output not in (None, "image", "json", "all", "dicom_seg"):
        raise InputError(f"output must be image, json, all or dicom_seg, not {output!r}", 400)
    p = _json_object(params, "params")
    if output == "dicom_seg":
        _check_dicom_seg(instance.datastore(), p)
    request: Dict[str, Any] = dict(instance.info().get("config", {}).get("infer", {}))
    request.update({k: v for k, v in p.items() if k not in PATH_KEYS})
    request["model"] = model
    trusted = []
    with uploads.upload_folder() as folder:
        try:
            if file:
                request["image"] = uploads.save_upload(folder, file, "image")
            elif session_id:
                path, info = session_image(session_id)
                uploads.trust(path)
                trusted.append(path)
                request["image"], request["session"] = path, info
            elif image:
                request["image"] = check_name(image, "image id")
            else:
                raise InputError("no image: pass ?image=ID, ?session_id=ID or upload a file", 400)
            if label:
                label_path = uploads.save_upload(folder, label, "label")
                if label_path.endswith(".bin"):  # OHIF's scribbles: raw bytes on the image's grid
                    from monailabel.datastore.utils.convert import binary_to_image

                    ref = request["image"] if os.path.isabs(request["image"]) else _image_file(request["image"])
                    label_path = binary_to_image(ref, label_path)
                    uploads.trust(label_path)
                    trusted.append(label_path)
                request["label"] = label_path
            result = instance.infer(request)
            if result is None:
                raise InputError("inference returned no result", 500)
            if output == "dicom_seg":  # as MONAI Label does it, for a DICOMweb datastore
                result["dicom_seg"] = _dicom_seg(instance.datastore(), image, result, p)
            return send_response(instance.datastore(), result, output, background_tasks)
        finally:
            for path in trusted:
                uploads.untrust(path)


def _check_dicom_seg(datastore, params: dict) -> None:
    from monailabel.datastore.dicom import DICOMWebDatastore

    if not isinstance(datastore, DICOMWebDatastore):
        raise InputError("output=dicom_seg needs a DICOMweb datastore", 400)
    if not params.get("label_info"):
        raise InputError("output=dicom_seg needs label_info in params", 400)


def _dicom_seg(datastore, image: str, result: dict, params: dict) -> str:
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    _check_dicom_seg(datastore, params)
    uri = datastore.get_image_uri(image)
    base = next((uri[: -len(e)] for e in (".nii.gz", ".nii", ".nrrd") if uri.endswith(e)), uri)
    label = result.get("file") or result.get("label")
    return nifti_to_dicom_seg(base, label, params.get("label_info"), use_itk=True)


# ---- training, scoring, active learning: launched off the event loop ---------------------------------
SEARCH_TRAINER = "dints_search"


def served_trainers(instance) -> list[str]:
    """The trainers of the models this server serves (a trainer with the inference task of the same name): the
    segmentation and the interactive model; never the architecture search (``POST /train/dints_search``)."""
    return [m for m in instance._trainers if m in instance._infers and m != SEARCH_TRAINER]


def _check_train_params(model: str, task, params: dict) -> None:
    from lib.params import parse_request

    if getattr(task, "params", None):
        try:
            cfg = parse_request(task.params, params)
            if hasattr(task, "check_files"):
                task.check_files(cfg)
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad training parameter for {model}: {exc}", 400) from None


def _refuse_untrainable(instance, requests: Dict[str, dict]) -> None:
    """409 with the reason when a requested run could not train on the datastore's labels (too few usable labels,
    a split that leaves too few for training), instead of a task that fails in the log."""
    datastore = instance.datastore()
    problems = []
    for model, request in requests.items():
        check = getattr(instance._trainers[model], "data_problem", None)
        problem = check(request, datastore) if check is not None else None
        if problem:
            problems.append(problem)
    if problems:
        raise InputError(" | ".join(problems), 409)


@router.get("/train/", summary="Training status (the run's output lines for the admin role only)")
def training_status(all: bool = False, check_if_running: bool = False, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.train import status

    from lib.server.access import current_identity

    return visible_status(status(all, check_if_running), current_identity())


def visible_status(res, identity):
    """A training status as ``identity`` may see it: a run's output lines hold server paths and, when it fails,
    its traceback, so only the admin role (or anybody, with authentication off) gets them."""
    if identity is None or identity.has(ADMIN):
        return res
    strip = (lambda task: {k: v for k, v in task.items() if k != "details"} if isinstance(task, dict) else task)
    return [strip(t) for t in res] if isinstance(res, list) else strip(res)


@router.post("/train/", summary="Train the served models, one after another")
@answers
def run_served_training(params: Optional[dict] = None, run_sync: Optional[bool] = False,
                        user: User = Depends(RBAC(ADMIN))):
    """MONAI Label's ``POST /train/`` (OHIF's *Update Model*) queued every trainer, the architecture search
    included; this queues the served models' trainers, one after another (MONAI Label's ``enqueue``).
    ``params``: values for every model, and ``{"<model>": {...}}`` for one model (they win)."""
    from monailabel.utils.async_tasks.task import AsyncTask

    instance = app_instance()
    models = served_trainers(instance)
    if not models:
        raise InputError("this server serves no model it can train", 404)
    params = dict(params or {})
    params.pop("enqueue", None)
    shared = {k: v for k, v in params.items() if k not in instance._trainers}
    requests: Dict[str, dict] = {}
    for model in models:
        own = params.get(model) or {}
        if not isinstance(own, dict):
            raise InputError(f"params['{model}'] must be a JSON object of training parameters", 400)
        requests[model] = {**shared, **own}
        _check_train_params(model, instance._trainers[model], requests[model])
    _refuse_untrainable(instance, requests)
    result = {}
    for model in models:
        res, detail = AsyncTask.run("train", request={"model": model}, params=dict(requests[model]),
                                    force_sync=run_sync, enqueue=True)
        result[model] = {"result": res, "detail": detail}
    logger.info(f"Training queued for the served models {models} ({SEARCH_TRAINER} only on its own request)")
    return result


@router.post("/train/{model}", summary="Start training a model")
@answers
def run_training(model: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
                 enqueue: Optional[bool] = False, user: User = Depends(RBAC(ADMIN))):
    from monailabel.endpoints.train import run_model
    from monailabel.utils.async_tasks.utils import processes

    from lib.params import truthy

    instance = app_instance()
    check_name(model, "model name")
    if model not in instance._trainers:
        raise InputError(f"no trainer '{model}': choose one of {sorted(instance._trainers)}", 404)
    params = dict(params or {})
    if "enqueue" in params:  # also accepted in the body
        enqueue = enqueue or truthy(params.pop("enqueue"))
    _check_train_params(model, instance._trainers[model], params)
    if not (processes("train") and not enqueue):  # (a refused second run is MONAI Label's 429, below)
        _refuse_untrainable(instance, {model: params})
    return run_model(model, params, run_sync, enqueue)


@router.post("/scoring/{method}", summary="Run a scoring method")
@answers
def run_scoring(method: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
                user: User = Depends(RBAC(ANNOTATOR))):
    from monailabel.endpoints.scoring import run_method

    instance = app_instance()
    check_name(method, "scoring method")
    if method not in instance._scoring_methods:
        raise InputError(f"no scoring method '{method}': choose one of {sorted(instance._scoring_methods)}", 404)
    return run_method(method, params, run_sync)


@router.post("/activelearning/{strategy}", summary="Next image to label")
@answers
def next_sample(strategy: str, params: Optional[dict] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.activelearning import sample

    check_name(strategy, "strategy")
    return sample(strategy, params, user.username)


@router.get("/datastore/", summary="Images and labels of the datastore")
@answers
def datastore_listing(output: Optional[str] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.datastore import ResultType, datastore

    if output not in (None, "stats", "train", "all"):
        raise InputError(f"output must be stats, train or all, not {output!r}", 400)
    ds = app_instance().datastore()
    lock = getattr(ds, "_mutex", None)
    if lock is None:
        return datastore(ResultType(output) if output else None)
    with lock:
        return datastore(ResultType(output) if output else None)


# ---- model weights ------------------------------------------------------------------------------------
@router.put("/model/{model}", summary="Upload new weights (checked to load; the previous file is kept)")
@answers
def update_model(model: str, file: UploadFile = File(...), user: User = Depends(RBAC(ADMIN))):
    import time

    from monailabel.utils.others.generic import file_checksum

    from lib import atomic
    from lib.networks.arch_code import ArchCodeError
    from lib.networks.factory import CheckpointError

    instance = app_instance()
    check_name(model, "model name")
    task = instance._infers.get(model)
    if task is None:
        raise InputError(f"no model '{model}': choose one of {sorted(instance._infers)}", 404)
    target = instance.model_file(model, validate=False)
    if not target:
        raise InputError(f"model '{model}' has no weights file configured", 501)
    with uploads.upload_folder() as folder:
        path = uploads.save_upload(folder, file, "weights", default_ext=".pt", trusted=False)
        if hasattr(task, "served"):
            try:
                task.served.spec.load(path)
            except (CheckpointError, ArchCodeError, RuntimeError, ValueError, KeyError, EOFError) as exc:
                raise InputError(f"the uploaded file is not usable weights for '{model}': {exc}", 422) from None
        if os.path.exists(target):  # never lose the weights being replaced
            atomic.copy_file(target, f"{target}.{time.strftime('%Y%m%d-%H%M%S')}.replaced")
        atomic.copy_file(path, target)
    stat = os.stat(target)
    return {"checksum": file_checksum(target), "modified_time": int(stat.st_mtime)}
