"""The datastore routes: images, labels and their versions, the listing. Same paths, parameters and answers as
MONAI Label 0.8.5, with names checked, uploads in private temporary folders, labels checked against their image
and versioned (the previous version is always kept); new: ``GET /datastore/label/versions``,
``GET /datastore/label/version`` and ``POST /datastore/label/restore``."""

from __future__ import annotations

import logging
import os
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Header, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type

from lib.datastore.local import image_uri
from lib.datastore.names import check_inside, check_name
from lib.errors import InputError
from lib.server import uploads
from lib.server.roles import ADMIN, ANNOTATOR, USER
from lib.server.route_helpers import answers, datastore_with_history, etag, json_object, revision

logger = logging.getLogger(__name__)
router = APIRouter()


# ---- datastore: images ------------------------------------------------------------------------------
@router.put("/datastore/", include_in_schema=False)
@router.put("/datastore/image", summary="Upload a new image (never replaces an existing one)")
@answers
def add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
              user: User = Depends(RBAC(ANNOTATOR))):
    info = json_object(params, "params")
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


def image_file(image: str) -> str:
    uri = image_uri(app_instance().datastore(), image)
    if not os.path.isfile(uri):
        raise InputError(f"image '{image}' is not in the datastore", 404)
    return uri


@router.head("/datastore/image", summary="Check that an image exists")
@answers
def check_image(image: str, check_sum: Optional[str] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.datastore import download_image

    image_file(image)
    return download_image(image, check_only=True, check_sum=check_sum)


@router.get("/datastore/image", summary="Download an image")
@answers
def download_image(image: str, user: User = Depends(RBAC(USER))):
    path = image_file(image)
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
    info = json_object(params, "params")
    if user.username and not info.get("user"):
        info["user"] = user.username
    expected = revision(rev, if_match)
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
        headers = etag(res["revision"])
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
        return path, etag(ds.label_revision(image, tag))
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
    return datastore_with_history().label_versions(image, check_name(tag, "label tag"))


@router.get("/datastore/label/version", summary="Download one version of a label")
@answers
def download_label_version(image: str, rev: int, tag: str = "final", user: User = Depends(RBAC(USER))):
    entry, path = datastore_with_history().label_version_file(image, check_name(tag, "label tag"), rev)
    ext = os.path.basename(path)[len(f"r{int(rev):05d}"):]
    return FileResponse(path, media_type=get_mime_type(path), filename=f"{image}.r{int(rev)}{ext}", headers=etag(int(rev)))


@router.post("/datastore/label/restore", summary="Make an earlier version the current label (as a new version)")
@answers
def restore_label_version(image: str, rev: int, tag: str = "final", if_match: Optional[str] = Header(None),
                          user: User = Depends(RBAC(ANNOTATOR))):
    instance = app_instance()
    ds = datastore_with_history()
    entry = ds.restore_label(image, check_name(tag, "label tag"), rev, user=user.username,
                             expected_rev=revision(None, if_match))
    res = instance.on_save_label(image, image) or {}
    res.update({"image": image, "tag": tag, "revision": entry["rev"], "restored": int(rev)})
    return JSONResponse(res, headers=etag(entry["rev"]))


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
