"""``POST /infer/{model}``: inference on a datastore image, a session or an upload, with the client's label when it
sends one; a plain ``def``, so a long inference runs in the thread pool and never holds up the event loop."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, UploadFile
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.datastore.names import check_name
from lib.errors import InputError
from lib.server import uploads
from lib.server.datastore_routes import image_file
from lib.server.session_routes import session_image
from lib.server.roles import USER
from lib.server.route_helpers import PATH_KEYS, answers, json_object

logger = logging.getLogger(__name__)
router = APIRouter()


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
    p = json_object(params, "params")
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

                    ref = request["image"] if os.path.isabs(request["image"]) else image_file(request["image"])
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
