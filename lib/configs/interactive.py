"""``TaskConfig`` of the interactive model ``deepedit_<task>`` (DeepEdit-style clicks on a DiNTS network).

The same task, profile, architecture, limits and labelled images as the automatic model (it is a
:class:`SegmentationConfig` with 1 + classes input channels); its weights are
``pretrained_deepedit_<task>_<profile>.pt`` (shipped) / ``deepedit_<task>_<profile>.pt`` (published by
``POST /train/deepedit_<task>``). It always runs eagerly (``torch``): a click runs one window, where compiling
does not pay. ``--conf interactive false`` leaves it out.
"""

from __future__ import annotations

import logging
import os
from typing import Any


from lib.configs.segmentation import SegmentationConfig
from lib.networks.factory import resolve
from lib.params import truthy
from lib.task import get_task

logger = logging.getLogger(__name__)


def interactive_name(conf: dict[str, str]) -> str:
    return f"deepedit_{get_task(conf.get('task')).name}"


class InteractiveConfig(SegmentationConfig):
    conf_prefix = "interactive_"

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs):
        conf = {k: v for k, v in conf.items() if k not in ("network", "backend", "background_compile")}
        conf.update(network="dints", backend="torch", background_compile="false")
        super().init(name, model_dir, conf, planner, **kwargs)
        self.sigma_mm = float(conf.get("guidance_sigma_mm", 5.0))
        self.cache_mb = float(conf.get("click_cache_mb", 1024))
        self.click_scope = conf.get("click_scope", "connected")
        self.click_model = conf.get("click_model", "network")
        self.boundary_refine = truthy(conf.get("boundary_refine", "false"), "--conf boundary_refine")
        self.refiner_file = str(resolve(conf.get("boundary_refiner_file",
                                                 f"boundary_refiner_{self.task.name}_{self.profile.name}.pt"), model_dir))

    def refiner(self):
        """The boundary refiner (:mod:`lib.transforms.boundary_refine`), None when off or when this task and
        profile have none (it is fitted to one profile's interactive model)."""
        if not self.boundary_refine:
            return None
        if not os.path.exists(self.refiner_file):
            logger.info(f"boundary refinement off: no refiner at {self.refiner_file}")
            return None
        from lib.transforms.boundary_refine import BoundaryRefiner

        try:
            return BoundaryRefiner.load(self.refiner_file)
        except Exception as exc:  # a damaged file must not stop the server: answer with the network alone, say so
            logger.error(f"boundary refinement off: cannot read {self.refiner_file}: {exc}")
            return None

    def weights_stem(self) -> str:
        return "deepedit"

    def in_channels(self) -> int:
        return 1 + self.task.num_classes  # the CT and one guidance channel per class, background included

    def infer(self):
        from lib.infers.interactive import InteractiveInfer

        task = InteractiveInfer(self.served, self.task, self.profile, limits=self.limits, fast_path=self.fast_path,
                                num_threads=self.num_threads, min_component_fraction=self.min_component_fraction,
                                sigma_mm=self.sigma_mm, cache_mb=self.cache_mb,
                                click_scope=self.click_scope, click_model=self.click_model, refiner=self.refiner())
        return {self.name: task}

    def trainer_options(self) -> dict:
        """``POST /train/deepedit_<task>`` is the automatic model's train task with DeepEdit's click simulation."""
        return {"interactive": True, "sigma_mm": self.sigma_mm}

    def search_trainer(self):
        return None

    def scoring_method(self):
        return {}

    def strategy(self, on_not_ready=None):
        return {}
