"""Training, scoring, active learning and the served weights: requests checked (parameters, the data a run needs)
before anything is launched, runs launched off the event loop."""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from fastapi import APIRouter, Depends, File, UploadFile
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.datastore.names import check_name
from lib.errors import InputError
from lib.server import uploads
from lib.server.roles import ADMIN, ANNOTATOR, USER
from lib.server.route_helpers import answers

logger = logging.getLogger(__name__)
router = APIRouter()


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

    from lib.params import request_flag

    instance = app_instance()
    check_name(model, "model name")
    if model not in instance._trainers:
        raise InputError(f"no trainer '{model}': choose one of {sorted(instance._trainers)}", 404)
    params = dict(params or {})
    if "enqueue" in params:  # also accepted in the body (a bad value is a 400, never a silent False)
        enqueue = request_flag(params, "enqueue") or enqueue
        del params["enqueue"]
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
    check = getattr(instance._scoring_methods[method], "check_request", None)
    if check is not None:  # a bad parameter is a 400 here, not a failed task in the background process's log
        check(dict(params or {}))
    return run_method(method, params, run_sync)


@router.post("/activelearning/{strategy}", summary="Next image to label")
@answers
def next_sample(strategy: str, params: Optional[dict] = None, user: User = Depends(RBAC(USER))):
    from monailabel.endpoints.activelearning import sample

    check_name(strategy, "strategy")
    return sample(strategy, params, user.username)



# ---- model weights ------------------------------------------------------------------------------------
@router.put("/model/{model}", summary="Upload new weights (checked to load; the previous file is kept)")
@answers
def update_model(model: str, file: UploadFile = File(...), user: User = Depends(RBAC(ADMIN))):
    import time

    from lib import atomic
    from lib.networks.arch_code import ArchCodeError
    from lib.networks.factory import CheckpointError, file_checksum

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
