"""What every infer task of this app shares: a served model (:class:`lib.runtime.served_model.ServedModel`) of a
task on a profile, listed in ``/info`` with or without weights, the input limits and fast-path options, and the
request check that runs once per inference (:meth:`ServedTask.checked` / :meth:`ServedTask.check_once`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib.profiles import Profile
from lib.runtime.fast_path import FastPathOptions
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask
from lib.transforms.components import DEFAULT_MIN_FRACTION
from lib.transforms.load import InputLimits


# the request key of the mark :meth:`ServedTask.checked` leaves; its value is never a JSON value, so no client can
# send a request that passes for checked
CHECKED_KEY = "_checked_by"


@dataclass(frozen=True)
class RequestChecked:
    """The mark of a request one task has checked (``task``: that task's ``id``; it survives MONAI's deep copies)."""

    task: int


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

    def check_request(self, request: dict) -> Any:
        """Refuse a bad request before any image work (:class:`lib.errors.InputError`); the tasks say what is bad."""
        return None

    def checked(self, request: dict) -> dict:
        """Check ``request`` now and return it marked as checked by this task.

        The app calls this before a request waits for the inference slot, so a bad request is refused at once; the
        task's own :meth:`check_once` then knows the check has run and does not run it a second time."""
        self.check_request(request)
        return {**request, CHECKED_KEY: RequestChecked(id(self))}

    def check_once(self, request: dict) -> None:
        """The task's own check at the start of ``__call__`` (before any image work), skipped when the app already
        ran it (:meth:`checked`); in-process callers (scoring, evaluation, tests) are checked here."""
        mark = request.get(CHECKED_KEY)
        if not (isinstance(mark, RequestChecked) and mark.task == id(self)):
            self.check_request(request)

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
