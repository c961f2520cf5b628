"""MONAI Label app: DiNTS segmentation of the pancreas and pancreatic tumour in CT.

Start it with ``monailabel start_server --app apps/dints_pancreas --studies sample-datastore`` (or
``./run.sh``). The app finds its code (``lib/``) and models (``model/``) relative to this file, so it
starts the same way from any working directory.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fastapi import HTTPException  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.exception import MONAILabelException  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402

from lib.configs.dints_pancreas import DiNTSPancreasConfig  # noqa: E402
from lib.configs.profiles import LABELS  # noqa: E402
from lib.errors import InputError  # noqa: E402

logger = logging.getLogger(__name__)

MODEL_NAME = "dints_pancreas"


class DiNTSPancreasApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.model_dir = str(Path(conf.get("model_dir", REPO_ROOT / "model")).resolve())
        self.task_config = DiNTSPancreasConfig()
        self.task_config.init(MODEL_NAME, self.model_dir, conf, None)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="DiNTS Pancreas",
            description="Pancreas and pancreatic tumour segmentation in CT with a DiNTS network",
            version="0.1.0",
            labels=dict(LABELS),
        )

    def init_infers(self) -> dict[str, InferTask]:
        return dict(self.task_config.infer())

    # ---- training (lib/trainers) -------------------------------------------------------------------
    def init_trainers(self) -> dict[str, TrainTask]:
        from lib.trainers.auto import AutoTrainer

        self.auto_trainer = AutoTrainer(self.conf, self.model_dir, MODEL_NAME)
        return {MODEL_NAME: self.task_config.trainer(), "dints_search": self.task_config.search_trainer()}

    def on_init_complete(self):
        super().on_init_complete()
        if getattr(self, "auto_trainer", None) is not None and self.auto_trainer.enabled:
            self.auto_trainer.remember(self.datastore())

    def on_save_label(self, image_id, label_id):
        res = super().on_save_label(image_id, label_id) or {}
        auto = getattr(self, "auto_trainer", None)
        if auto is not None and auto.enabled:
            try:
                res.update(auto.on_label(self))
            except Exception as exc:  # a failed trigger must not fail the label upload
                logger.error(f"auto-train trigger failed: {exc}")
        return res

    # ---- request checking --------------------------------------------------------------------------
    def _check_image_request(self, request: dict[str, Any]) -> None:
        """Only datastore ids, or files the REST layer itself uploaded to the temp folder, may be read."""
        image = request.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InputError("no image given: pass a datastore image id or upload a file", 400)
        if self.datastore().get_image_uri(image):
            return
        if os.path.isabs(image) and os.path.isfile(image):
            real = os.path.realpath(image)
            tmp = os.path.realpath(tempfile.gettempdir())
            if os.path.commonpath([real, tmp]) == tmp:
                return
            raise InputError(f"'{image}' is not an image of this datastore (server paths cannot be read)", 400)
        if "/" in image or "\\" in image or ".." in image or os.path.isabs(image):
            raise InputError(f"'{image}' is not a valid image id (ids name images inside the studies folder)", 400)
        raise InputError(f"image '{image}' is not in the datastore", 404)

    def infer(self, request, datastore=None):
        try:
            if datastore is None:
                self._check_image_request(request)
            return super().infer(request, datastore)
        except InputError as exc:
            logger.warning(f"Refused infer request for {request.get('image')!r}: {exc.message}")
            raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
        except MONAILabelException as exc:
            raise HTTPException(status_code=400, detail=exc.msg) from None
        except HTTPException:
            raise
        except Exception as exc:
            logger.error("Inference failed:\n" + traceback.format_exc())
            raise HTTPException(status_code=500, detail=f"inference failed: {type(exc).__name__}: {exc}") from None
