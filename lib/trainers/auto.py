"""``--conf auto_train_after N``: start the model's training (``dints_pancreas``) by itself after N new final labels.

"New" means labelled since the last training run: not in the persisted train/validation split (or, before
any run, not labelled when the server started). While a run is going one more run is queued (MONAI Label's
``enqueue``), never more, so labels submitted during a run are trained on right after it.
``--conf auto_train_params '{"epochs": 50}'`` passes request parameters to those runs.
"""

from __future__ import annotations

import json
import logging
import os

from lib import atomic
from lib.trainers.datalist import split_file

logger = logging.getLogger(__name__)


class AutoTrainer:
    def __init__(self, conf: dict, model_dir: str, model: str, task: str):
        self.after = int(float(conf.get("auto_train_after", 0) or 0))
        try:
            self.params = json.loads(conf.get("auto_train_params", "{}") or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"--conf auto_train_params is not JSON: {exc}") from None
        self.split_path = os.path.join(model_dir, split_file(task))
        self.model = model
        self.known_at_start: set[str] | None = None
        self.triggered: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.after > 0

    def remember(self, datastore) -> None:
        self.known_at_start = set(datastore.get_labeled_images())

    def new_labels(self, datastore) -> list[str]:
        split = atomic.read_json(self.split_path)
        if split and isinstance(split.get("training"), list):
            known = set(split.get("training", [])) | set(split.get("validation", []))
        else:
            known = self.known_at_start or set()
        return sorted(set(datastore.get_labeled_images()) - known - self.triggered)

    def on_label(self, app) -> dict:
        if not self.enabled:
            return {}
        from monailabel.utils.async_tasks.utils import processes, tasks

        new = self.new_labels(app.datastore())
        if len(new) < self.after:
            logger.info(f"auto-train: {len(new)}/{self.after} new final labels")
            return {"auto_train": f"{len(new)}/{self.after} new labels"}
        running = len(processes("train")) > 0
        queued = any(t.get("status") == "SUBMITTED" for t in tasks("train"))
        if running and queued:
            logger.info("auto-train: a run is going and another is queued; the new labels go into the queued one")
            return {"auto_train": "queued run pending"}
        self.triggered |= set(new)
        logger.info(f"auto-train: {len(new)} new final labels {new}: starting {self.model} training")
        result = app.async_training(self.model, params={self.model: dict(self.params)}, enqueue=True)
        return {"auto_train": "started" if not running else "queued", "task": (result or {}).get("id") if isinstance(result, dict) else None}
