"""``dints_uncertainty``: the MONAI Label scoring method behind the ``uncertainty`` strategy.

For every unlabelled image (no ``final`` label) it loads the CT exactly as the infer task does (the task's
preprocessing, :mod:`lib.transforms.preprocessing`), runs :func:`lib.scoring.tta.score_volume` with the current
model and stores the result in the datastore's image info under ``dints_uncertainty``::

    {"score": 0.41, "pancreas": 0.38, "tumor": 0.44, "bald": 0.02, "bald_sum": 310.5,
     "pancreas_voxels": 5120, "tumor_voxels": 240, "voxel_ml": 0.0045,
     "model": "<checksum of the weights file>",
     "ts": 1700000000, "seconds": 12.3, "samples": 4, "options": "<hash of the TTA options>", ...}

``score`` is the predictive entropy (``uncertainty`` and ``clasp_pe`` strategies), ``bald`` the committee mutual
information of the TTA samples (``bald`` strategy), ``<label>_voxels`` the voxels the mean of the samples labels
with each class on the scoring grid (``voxel_ml`` millilitres each; ``random_fg`` and ``clasp_pe`` use the
lesion count). A score whose ``model`` is not the checksum of the weights served now (training published new
ones) or whose ``options`` differ counts as missing for every strategy (:func:`stored_score`).

Images already scored with the same model checksum and options are skipped, so repeated runs are cheap;
``{"force": true}`` rescores everything. MONAI Label runs scoring methods in a background process
(``POST /scoring/dints_uncertainty``, and by itself after training); that process lowers its priority
(``nice``) and uses ``scoring_threads`` threads, so ``/infer`` in the server process keeps the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from monai.transforms import Compose
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.params import request_flag
from lib.runtime.served_model import ServedModel
from lib.scoring.tta import TTAOptions, score_volume
from lib.task import SegmentationTask
from lib.transforms.load import InputLimits
from lib.transforms.preprocessing import ct_preprocessing

logger = logging.getLogger(__name__)

INFO_KEY = "dints_uncertainty"


def options_hash(opts: TTAOptions, spacing) -> str:
    blob = json.dumps({**opts.key(), "spacing": [float(s) for s in spacing]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def preprocessing(task: SegmentationTask, spacing, limits: InputLimits | None = None) -> Compose:
    return Compose(ct_preprocessing(task, spacing, ("image",), loader="checked", limits=limits))


def refresh_datastore(datastore: Datastore) -> None:
    """Re-read the datastore file if another process (scoring, training) changed it since we last did."""
    reload = getattr(datastore, "_init_from_datastore_file", None)
    if callable(reload):
        try:
            reload()
        except Exception as exc:  # never fail a request because of a refresh
            logger.debug(f"datastore refresh failed: {exc}")


def stored_score(info: dict, checksum: str | None, opts_hash: str | None = None) -> dict | None:
    """The stored score of an image if it was computed with model ``checksum`` (and options), else None."""
    s = info.get(INFO_KEY)
    if not isinstance(s, dict) or "score" not in s or s.get("error"):
        return None
    if checksum is None or s.get("model") != checksum:
        return None
    if opts_hash is not None and s.get("options") != opts_hash:
        return None
    return s


def is_current(info: dict, checksum: str | None, opts_hash: str | None = None) -> bool:
    """Scored (or found unreadable) with this model and these options: nothing to recompute."""
    s = info.get(INFO_KEY)
    return (isinstance(s, dict) and checksum is not None and s.get("model") == checksum
            and (opts_hash is None or s.get("options") == opts_hash))


class DiNTSUncertaintyScoring(ScoringMethod):
    """TTA uncertainty of every unlabelled image, stored in the image info with the model checksum."""

    def __init__(
        self,
        served: ServedModel,
        task: SegmentationTask,
        spacing,
        limits: InputLimits | None = None,
        options: TTAOptions | None = None,
        threads: int = 1,
        nice: int = 10,
        network_loader: Callable[[str], torch.nn.Module] | None = None,
    ):
        super().__init__(
            "TTA uncertainty (intensity/shift test-time augmentation) of the current model per unlabelled "
            f"image ({', '.join(task.labels)}); stored in the image info "
            f"'{INFO_KEY}' with the model checksum"
        )
        self.served = served
        self.task = task
        self.spacing = tuple(float(s) for s in spacing)
        self.limits = limits or InputLimits()
        self.options = options or TTAOptions()
        self.threads = int(threads)
        self.nice = int(nice)
        self.checksum = served.checksum
        self.network_loader = network_loader
        self.opts_hash = options_hash(self.options, self.spacing)

    def info(self):
        return {**super().info(), "info_key": INFO_KEY, "samples": self.options.samples,
                "spacing": list(self.spacing), "tumor_weight": self.options.tumor_weight}

    # ---- helpers -------------------------------------------------------------------------------------
    def _load_network(self, path: str) -> torch.nn.Module:
        if self.network_loader is not None:
            return self.network_loader(path)
        return self.served.network("cpu")

    def stale_images(self, datastore: Datastore) -> list[str]:
        """Unlabelled images without a score for the current model (what a scoring run would compute)."""
        refresh_datastore(datastore)
        checksum = self.checksum()
        if checksum is None:
            return []
        return [i for i in datastore.get_unlabeled_images()
                if not is_current(datastore.get_image_info(i), checksum, self.opts_hash)]

    def _lower_priority(self) -> None:
        if self.nice > 0 and hasattr(os, "nice"):
            try:
                os.nice(self.nice)
            except OSError:
                pass
        if self.threads > 0:
            torch.set_num_threads(self.threads)

    # ---- MONAI Label entry point -------------------------------------------------------------------
    def check_request(self, request: dict[str, Any]) -> None:
        """Refuse bad parameters in the request (``POST /scoring`` calls this before launching the run)."""
        request_flag(request, "force")

    def __call__(self, request: dict[str, Any], datastore: Datastore):
        start = time.time()
        force = request_flag(request, "force")
        path = self.served.path()
        if path is None:
            msg = f"no model weights found (looked for {', '.join(self.served.weights)}): nothing scored"
            logger.warning(msg)
            return {"scored": 0, "skipped": 0, "errors": 0, "message": msg}
        checksum = self.served.checksum(path)
        refresh_datastore(datastore)
        images = list(request.get("images") or datastore.get_unlabeled_images())
        todo = [i for i in images if force or not is_current(datastore.get_image_info(i), checksum, self.opts_hash)]
        result: dict[str, Any] = {"model": checksum, "scored": 0, "skipped": len(images) - len(todo), "errors": 0,
                                  "scores": {}}
        if not todo:
            result["seconds"] = round(time.time() - start, 2)
            logger.info(f"{INFO_KEY}: all {len(images)} unlabelled images already scored with model {checksum}")
            return result
        if request.get("lower_priority", True):
            self._lower_priority()
        net = self._load_network(path)
        pre = preprocessing(self.task, self.spacing, self.limits)
        logger.info(f"{INFO_KEY}: scoring {len(todo)} images with model {checksum} ({self.options.samples} samples each)")
        for n, image_id in enumerate(todo):
            uri = datastore.get_image_uri(image_id)
            t0 = time.time()
            try:
                data = pre({"image": uri})
                res = score_volume(net, data["image"], self.spacing, self.options)
                names = list(self.task.labels)  # the organ term, then the lesion term where the task has one
                terms = {names[0]: res["pancreas"], **({names[1]: res["tumor"]} if len(names) > 1 else {})}
                voxels = {f"{names[0]}_voxels": res["pancreas_voxels"],
                          **({f"{names[1]}_voxels": res["tumor_voxels"]} if len(names) > 1 else {})}
                entry = {"score": res["score"], **terms, "bald": res["bald"], "bald_sum": res["bald_sum"], **voxels,
                         "voxel_ml": round(float(np.prod(self.spacing)) / 1000.0, 6),
                         "disagreement": res["disagreement"], "no_pancreas_found": res["no_pancreas_found"],
                         "tumor_volume_cv": res["tumor_volume_cv"], "samples": res["samples"],
                         "model": checksum, "options": self.opts_hash, "ts": int(time.time()),
                         "seconds": round(time.time() - t0, 2)}
                result["scored"] += 1
            except Exception as exc:  # one unreadable image must not stop the others
                reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                logger.warning(f"{INFO_KEY}: cannot score {image_id}: {reason}")
                entry = {"error": reason, "model": checksum, "options": self.opts_hash, "ts": int(time.time())}
                result["errors"] += 1
            # the server may have written the datastore meanwhile (labels, strategy stamps): merge, don't clobber
            refresh_datastore(datastore)
            try:
                datastore.update_image_info(image_id, {INFO_KEY: entry})
            except Exception as exc:
                logger.warning(f"{INFO_KEY}: cannot store the score of {image_id}: {exc}")
            result["scores"][image_id] = entry.get("score")
            logger.info(f"{INFO_KEY}: {n + 1}/{len(todo)} {image_id}: {entry}")
        result["seconds"] = round(time.time() - start, 2)
        return result
