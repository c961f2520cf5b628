"""What every infer task of this app shares: a served model (:class:`lib.runtime.served_model.ServedModel`) of a
task on a profile, listed in ``/info`` with or without weights, and the input limits and fast-path options."""

from __future__ import annotations

from typing import Any

from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.profiles import Profile
from lib.runtime.fast_path import FastPathOptions
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask
from lib.transforms.components import DEFAULT_MIN_FRACTION
from lib.transforms.load import InputLimits


class ServedTask(BasicInferTask):
    def __init__(self, served: ServedModel, task: SegmentationTask, profile: Profile, infer_type, description: str,
                 config: dict, limits: InputLimits | None = None, fast_path: FastPathOptions | None = None,
                 num_threads: int = 0, min_component_fraction: float = DEFAULT_MIN_FRACTION, **kwargs):
        super().__init__(path=list(served.weights), network=None, type=infer_type, labels=dict(task.labels), dimension=3,
                         description=description, roi_size=profile.roi_size,
                         config={"profile": profile.name, "result_extension": ".nii.gz", **config}, **kwargs)
        self.served, self.task, self.profile = served, task, profile
        self.limits = limits or InputLimits()
        self.fast_path = fast_path or FastPathOptions()
        self.num_threads = int(num_threads or 0)
        self.min_component_fraction = float(min_component_fraction)

    def is_valid(self) -> bool:
        """Listed in ``/info`` with or without weights: a model that has none yet (a new task, network or the
        interactive model) is trained from the client (``POST /train/<model>``); until then ``/infer`` answers 503."""
        return True

    def model_info(self) -> dict[str, Any]:
        return self.served.info()

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["model"] = self.model_info()
        if info["model"]["path"] is None:
            info["model"]["note"] = "no weights yet: train this model (POST /train/<model>) or install weights"
        info["task"] = self.task.name
        info["network"] = self.served.spec.network
        return info
