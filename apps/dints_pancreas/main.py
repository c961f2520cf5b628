"""MONAI Label app: DiNTS segmentation of the pancreas and pancreatic tumour in CT (and, with ``--conf task`` /
``--conf network``, the spleen and the seed bundle's UNet from the same code).

Start it with ``monailabel start_server --app apps/dints_pancreas --studies sample-datastore`` (or
``./run.sh``). The app finds its code (``lib/``) and models (``model/``) relative to this file, so it
starts the same way from any working directory.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fastapi import HTTPException  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.interfaces.tasks.scoring import ScoringMethod  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402

from lib.configs.segmentation import SegmentationConfig, model_name  # noqa: E402
from lib.datastore.local import image_uri  # noqa: E402
from lib.datastore.names import check_name  # noqa: E402
from lib.errors import InputError, http_error  # noqa: E402
from lib.params import request_flag, truthy  # noqa: E402
from lib.profiles import NETWORK_TITLES  # noqa: E402
from lib.server.access import require_role  # noqa: E402
from lib.server.roles import ANNOTATOR  # noqa: E402
from lib.server.uploads import is_trusted  # noqa: E402

logger = logging.getLogger(__name__)


BACKGROUND_POSITIONS = ("last", "first")


def background_position(conf: dict) -> str:
    """``--conf background_position``: where ``/info``'s ``labels`` list ``background`` (``last``, the default, or
    ``first``); anything else stops the start-up with this message."""
    value = str(conf.get("background_position", "last")).strip().lower()
    if value not in BACKGROUND_POSITIONS:
        raise ValueError(f"--conf background_position must be 'last' or 'first', not {conf.get('background_position')!r}")
    return value


def label_list(models: dict, labels: dict[str, int], background: str = "last") -> list[str]:
    """``/info``'s top-level ``labels``: a list of names by value, over the task and every model (``background``
    where the interactive model takes background clicks). A list, as MONAI Label builds it for its sample apps:
    the stock OHIF v3 panel appends to it (a dict there left the panel empty), 3D Slicer iterates it.

    ``background`` comes ``last`` (as in MONAI Label's sample apps) or ``first``. 3D Slicer makes one segment per
    entry in this order and sends each kept segment's position among all of them as its ``idx``, while its
    labelmap export numbers the kept segments 1..n: with background last the two agree."""
    values = dict(labels)
    for model in models.values():
        model_labels = model.get("labels")
        if isinstance(model_labels, dict):
            for name, value in model_labels.items():
                values.setdefault(name, int(value))
    names = [name for name, _ in sorted(values.items(), key=lambda item: (item[1], item[0]))]
    if "background" in names:
        names.remove("background")
        names.insert(len(names) if background == "last" else 0, "background")
    return names


class DiNTSPancreasApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.background_position = background_position(conf)  # checked first: a bad value stops the start-up
        self.model_dir = str(Path(conf.get("model_dir", REPO_ROOT / "model")).resolve())
        from lib.configs.bundle import bundle_configs

        self.bundle_configs = bundle_configs(conf, self.model_dir)  # --conf bundle: model-zoo bundles as downloaded
        self.model_name = model_name(conf)  # dints_pancreas unless --conf task / network say otherwise
        self.task_config = SegmentationConfig()
        self.task_config.init(self.model_name, self.model_dir, conf, None)
        task = self.task_config.task
        from lib.task import studies_label_problem

        problem = None if studies.startswith(("http://", "https://")) else studies_label_problem(studies, task)
        if problem:
            raise ValueError(problem)
        # the interactive model beside it (deepedit_<task>: clicks), unless --conf interactive false
        self.interactive_config = None
        if truthy(conf.get("interactive", "true"), "--conf interactive"):
            from lib.configs.interactive import InteractiveConfig, interactive_name

            self.interactive_config = InteractiveConfig()
            self.interactive_config.init(interactive_name(conf), self.model_dir, conf, None)
        # one inference at a time (each already uses every core); requests wait here, off the event loop
        self._infer_slot = threading.Lock()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="DiNTS Pancreas",
            description=f"{task.description[0].upper()}{task.description[1:]} segmentation with a "
                        f"{NETWORK_TITLES[self.task_config.network]} network",
            version="0.1.0",
            labels=list(task.labels),
        )
        from lib.server.install import install_into_server
        from lib.server.memory import limit_arenas

        limit_arenas(int(conf.get("malloc_arena_max", 2)))
        install_into_server(conf)

    def info(self):
        """MONAI Label's ``/info``, plus the served task (name, labels, window, spacing) and the tasks on offer."""
        from lib.task import TASKS

        info = super().info()
        info["labels"] = label_list(info.get("models", {}), dict(self.task_config.task.labels), self.background_position)
        info["task"] = self.task_config.task.describe()
        info["tasks"] = {name: dict(t.labels) for name, t in TASKS.items()}
        if self.bundle_configs:
            info["bundles"] = {c.name: c.bundle.describe() for c in self.bundle_configs}
        return info

    def init_infers(self) -> dict[str, InferTask]:
        infers = dict(self.task_config.infer())
        for config in self.bundle_configs:
            infers.update(config.infer())
        if self.interactive_config is not None:
            infers.update(self.interactive_config.infer())
        if truthy(self.conf.get("prompts", "true"), "--conf prompts"):
            from lib.infers.prompt import prompt_tasks

            infers.update(prompt_tasks(self.task_config.limits))
        return infers

    # ---- training (lib/trainers) -------------------------------------------------------------------
    def init_trainers(self) -> dict[str, TrainTask]:
        from lib.trainers.auto import AutoTrainer

        self.auto_trainer = AutoTrainer(self.conf, self.model_dir, self.model_name, self.task_config.task.name)
        trainers = {self.model_name: self.task_config.trainer()}
        trainers.update({config.name: config.trainer() for config in self.bundle_configs})
        if self.interactive_config is not None:
            trainers[self.interactive_config.name] = self.interactive_config.trainer()
        search = self.task_config.search_trainer()  # DiNTS only
        if search is not None:
            trainers["dints_search"] = search
        return trainers

    def on_init_complete(self):
        super().on_init_complete()
        self._start_scoring_watch()
        self._warm_up_infer()
        if getattr(self, "auto_trainer", None) is not None and self.auto_trainer.enabled:
            self.auto_trainer.remember(self.datastore())

    def _warm_up_infer(self) -> None:
        """Load the network now, and on the CPU start building its compiled package (``background_compile``)."""
        task = self._infers.get(self.model_name)
        if task is None or not hasattr(task, "warm_up"):
            return
        try:
            import torch

            task.warm_up("cuda" if torch.cuda.is_available() else "cpu")
        except Exception as exc:  # e.g. no weights yet: the first /infer reports it properly
            logger.warning(f"Model warm-up skipped: {exc}")

    def on_save_label(self, image_id, label_id):
        res = super().on_save_label(image_id, label_id) or {}
        auto = getattr(self, "auto_trainer", None)
        if auto is not None and auto.enabled:
            try:
                res.update(auto.on_label(self))
            except Exception as exc:  # a failed trigger must not fail the label upload
                logger.error(f"auto-train trigger failed: {exc}")
        return res

    # ---- active learning (lib/scoring, lib/activelearning) -------------------------------------------
    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        methods = dict(self.task_config.scoring_method())
        self._uncertainty_scoring = methods.get("dints_uncertainty")
        return methods

    def init_strategies(self) -> dict[str, Strategy]:
        return dict(self.task_config.strategy(on_not_ready=lambda: self.async_scoring(None)))

    def _auto_scoring(self) -> bool:
        return truthy(self.conf.get("auto_scoring", "true"), "--conf auto_scoring") and bool(getattr(self, "_auto_update_scoring", True))

    def _scoring_busy(self) -> bool:
        from monailabel.utils.async_tasks.utils import processes, tasks

        return bool(processes("scoring")) or any(t.get("status") in ("SUBMITTED", "RUNNING") for t in tasks("scoring"))

    def async_scoring(self, method, params=None):
        """Start scoring in the background only when an unlabelled image lacks a score of the current model
        and no scoring run is already running or queued (MONAI Label would queue one per request)."""
        scorer = getattr(self, "_uncertainty_scoring", None)
        if method is None and scorer is not None:
            if not self._auto_scoring():
                return {}
            try:
                stale = scorer.stale_images(self.datastore())
            except Exception as exc:
                logger.warning(f"cannot tell whether scores are current: {exc}")
                return {}
            if not stale:
                return {}
            if getattr(self, "_server_mode", False) and self._scoring_busy():
                return {}
            key = (scorer.checksum(), tuple(stale))
            if key == getattr(self, "_last_scoring_key", None):
                return {}  # already launched for exactly this state (a failed run is not retried in a loop)
            self._last_scoring_key = key
            logger.info(f"Scoring {len(stale)} unlabelled images in the background (model {key[0]})")
        return super().async_scoring(method, params)

    def _start_scoring_watch(self) -> None:
        """Rescore when a new model is published (training writes the weights file; nothing tells the app)."""
        period = float(self.conf.get("scoring_watch_seconds", 10))
        if period <= 0 or getattr(self, "_uncertainty_scoring", None) is None or not self._auto_scoring():
            return

        def watch():
            while True:
                time.sleep(period)
                try:
                    self.async_scoring(None)
                except Exception as exc:  # the watcher must never die
                    logger.warning(f"scoring watch: {exc}")

        threading.Thread(target=watch, name="scoring-watch", daemon=True).start()

    def next_sample(self, request):
        """Like MONAI Label's, but an empty result carries its reason and errors become clear HTTP answers."""
        strategy = request.get("strategy") or "random"
        task = self._strategies.get(strategy)
        if task is None:
            raise HTTPException(status_code=404,
                                detail=f"no strategy '{strategy}': choose one of {sorted(self._strategies)}")
        try:
            res = task(request, self.datastore())
        except Exception as exc:
            raise http_error(exc, "active learning", logger) from None
        if not res:
            return {"id": None, "message": "no image selected"}
        if res.get("id"):
            res["path"] = self.datastore().get_image_uri(res["id"])
        return res

    # ---- the data path (lib/datastore, lib/server) -------------------------------------------------
    def init_datastore(self):
        """The studies folder with checked names, checked and versioned labels (remote datastores: MONAI Label's)."""
        if self.studies.startswith(("http://", "https://")):
            return self._init_pacs_datastore()
        from monailabel.config import settings

        from lib.datastore.local import AnnotationDatastore

        return AnnotationDatastore(
            self.studies,
            labels=dict(self.task_config.task.labels),
            repair="monailabel.app" in sys.modules,  # the web server itself, not a train/scoring child
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _init_pacs_datastore(self):
        """A DICOMweb PACS (``--studies http://.../dicom-web``): :func:`lib.datastore.pacs_connection.pacs_datastore`."""
        from monailabel.config import settings

        from lib.datastore.pacs_connection import pacs_datastore

        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_datastore()
        self.studies = self.studies.rstrip("/").strip()
        return pacs_datastore(self.studies, dict(self.task_config.task.labels),
                              refresh_seconds=float(self.conf.get("dicomweb_refresh_seconds", 10)))

    def _resolve_image(self, request: dict[str, Any]) -> str | None:
        """Only datastore ids, this server's session files and the request's own upload may be read.

        Returns the datastore id when the image is one (the request then carries its absolute path)."""
        image = request.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InputError("no image given: pass a datastore image id, a session id or upload a file", 400)
        if os.path.isabs(image):
            if is_trusted(image):
                return None
            raise InputError("server paths cannot be read: pass a datastore image id, a session id or upload a file", 400)
        request["image"] = image_uri(self.datastore(), image)
        return image

    def infer(self, request, datastore=None):
        try:
            if datastore is not None:  # in-process callers (scoring, batch) pass their own datastore
                return super().infer(request, datastore)
            request = dict(request)
            save_label = request_flag(request, "save_label")
            request.pop("save_label", None)
            if save_label:
                require_role(ANNOTATOR, "saving the answer as a label (save_label)")
            image_id = self._resolve_image(request)
            task = self._infers.get(request.get("model"))
            # range checks before waiting for the inference slot; a ServedTask's mark spares it a second check
            if task is not None and hasattr(task, "checked"):
                request = task.checked(request)
            elif task is not None and hasattr(task, "check_request"):
                task.check_request(request)
            with self._infer_slot:
                result = super().infer(request, datastore)
            if save_label and image_id and result.get("file") and os.path.exists(result["file"]):
                tag = check_name(str(request.get("label_tag") or "original"), "label tag")
                self.datastore().save_label(image_id, result["file"], tag,
                                            {"model": request.get("model"), "source": "infer"})
                result = {**result, "tag": tag}
            return result
        except InputError as exc:
            logger.warning(f"Refused infer request for {request.get('image')!r}: {exc.message}")
            raise http_error(exc, "inference", logger) from None
        except Exception as exc:
            raise http_error(exc, "inference", logger) from None
