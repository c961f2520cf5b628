"""``TaskConfig`` of the interactive model ``deepedit_<task>`` (DeepEdit-style clicks on a DiNTS network).

The same task, profile, architecture, limits and labelled images as the automatic model (it is a
:class:`SegmentationConfig` with 1 + classes input channels); its weights are
``pretrained_deepedit_<task>_<profile>.pt`` (shipped) / ``deepedit_<task>_<profile>.pt`` (published by
``POST /train/deepedit_<task>``). It always runs eagerly (``torch``): a click runs one window, where compiling
does not pay. ``--conf interactive false`` leaves it out.
"""

from __future__ import annotations

from typing import Any

from lib.configs.segmentation import SegmentationConfig
from lib.task import get_task


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

    def weights_stem(self) -> str:
        return "deepedit"

    def in_channels(self) -> int:
        return 1 + self.task.num_classes  # the CT and one guidance channel per class, background included

    def infer(self):
        from lib.infers.interactive import InteractiveInfer

        task = InteractiveInfer(self.served, self.task, self.profile, limits=self.limits, fast_path=self.fast_path,
                                num_threads=self.num_threads, min_component_fraction=self.min_component_fraction,
                                sigma_mm=self.sigma_mm, cache_mb=self.cache_mb,
                                click_scope=self.click_scope)
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
