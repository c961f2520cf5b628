"""``TaskConfig`` of a model-zoo bundle served as it was downloaded (``--conf bundle DIR``).

The bundle (:mod:`lib.bundles.zoo`) says what is served: its labels, network, spacing, intensity window and
sliding window, its ``models/model.pt``. It runs through the same pipeline as the app's own model
(:class:`SegmentationConfig`: fast path, restore, backends, limits) and trains from the client with its own recipe
(optimizer, learning rate, loss). Training publishes ``<bundle>_trained.pt`` in the app's model folder, never into
the bundle directory, so the download stays as it came; the trained file wins over ``model.pt`` once it exists.

A bundle whose labels are those of one of the app's tasks (:mod:`lib.task`, compared by value and name) serves
under that task's label names, so every client sees one label list; any other bundle brings a task of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from lib.bundles.zoo import BundleError, ZooBundle, read_bundle
from lib.configs.segmentation import SegmentationConfig
from lib.params import truthy
from lib.profiles import get_profile
from lib.task import TASKS, SegmentationTask, same_labels

logger = logging.getLogger(__name__)


def matching_task(bundle: ZooBundle) -> SegmentationTask | None:
    """The app's task with the bundle's label values and (loosely) names: ``pancreatic tumor`` is ``tumor``."""
    return next((task for task in TASKS.values() if same_labels(bundle.labels, task)), None)


def bundle_task(bundle: ZooBundle) -> SegmentationTask:
    """The task a bundle serves: a matching app task with the bundle's window, spacing, orientation and crops, or a
    task of its own named after the bundle."""
    recipe = bundle.recipe
    crops: dict[str, Any] = {}
    if recipe is not None and recipe.crop_size:
        crops["crop_size"] = tuple(recipe.crop_size)
    if recipe is not None and recipe.crop_ratios:
        crops["crop_ratios"] = tuple(recipe.crop_ratios)
    spacing = {"cpu": bundle.spacing, "gpu": bundle.spacing}
    base = matching_task(bundle)
    if base is not None:
        return dataclasses.replace(base, hu_window=bundle.hu_window, spacing=spacing, orientation=bundle.orientation,
                                   reference=f"model-zoo bundle {bundle.title} {bundle.version}".strip(), **crops)
    return SegmentationTask(name=bundle.name, labels=dict(bundle.labels), hu_window=bundle.hu_window, spacing=spacing,
                            orientation=bundle.orientation, crop_radius_mm=0.0,
                            description=f"{', '.join(bundle.labels)} ({bundle.title})",
                            reference=f"model-zoo bundle {bundle.title} {bundle.version}".strip(), **crops)


class BundleConfig(SegmentationConfig):
    """One bundle directory, served under the directory's name (e.g. ``spleen_ct_segmentation``)."""

    bundle: ZooBundle

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, bundle: ZooBundle = None, **kwargs):
        self.bundle = bundle
        conf = {k: v for k, v in conf.items() if k not in ("network", "roi_size", "spacing", "sw_batch_size", "sw_overlap",
                                                              "channel_mul", "arch_file", "model_file")}
        # compiled engines and bf16 verdicts in the app's model folder, never in the downloaded bundle
        conf["engine_dir"] = os.path.join(str(conf.get("engine_dir", os.path.join(model_dir, "engines"))), self.bundle.name)
        super().init(name, model_dir, conf, planner, **kwargs)

    def define_model(self, conf: dict[str, str], model_dir: str) -> None:
        b = self.bundle
        self.task = bundle_task(b)
        self.network = b.network
        self.network_options = dict(b.network_options)
        base = get_profile(conf.get("profile"))
        self.profile = base.with_overrides(spacing=b.spacing, roi_size=b.roi_size, sw_batch_size=b.sw_batch_size,
                                           sw_overlap=b.sw_overlap, channel_mul=b.channel_mul, arch_file=b.arch_file)
        self.arch_file = b.arch_file or ""  # read when the network loads (bundle_configs loads it at start-up)
        self.trained_file = os.path.join(model_dir, f"{b.name}_trained.pt")
        if not os.path.exists(b.weights) and not os.path.exists(self.trained_file):
            raise BundleError(f"{b.weights}: missing (the bundle's weights; a downloaded bundle has them)")
        pretrained_only = truthy(conf.get("use_pretrained_only", "false"), "--conf use_pretrained_only")
        self.weights = [b.weights] if pretrained_only else [b.weights, self.trained_file]

    def searched_arch_file(self) -> str:
        return os.path.join(self.model_dir, f"{self.bundle.name}_arch_searched.pth")

    def trainer(self):
        from lib.trainers.tasks import SegmentationTrainTask

        b = self.bundle
        recipe = b.recipe
        how = (f"its own recipe ({recipe.optimizer}, lr {recipe.lr:g}, include_background "
               f"{str(recipe.include_background).lower()})" if recipe else "the app's recipe (the bundle has no train config)")
        return SegmentationTrainTask(self.name, self.model_dir, self.task, self.network, self.profile,
                                     arch_file=self.arch_file, weights=self.weights, trained_file=self.trained_file,
                                     searched_arch_file=self.searched_arch_file(), network_options=self.network_options,
                                     recipe=recipe, title=f"Train the model-zoo bundle {b.title} on the final labels with {how}")

    def search_trainer(self):
        return None  # the architecture search belongs to the app's own DiNTS model


def bundle_configs(conf: dict[str, str], model_dir: str) -> list[BundleConfig]:
    """The ``--conf bundle`` directories (comma-separated; relative to the working directory) as configs, in order.

    Sets ``conf["task"]`` to the bundles' task when ``--conf task`` is not given (a bundle of other labels than the
    app's tasks registers its own task); a bundle of another task than ``--conf task``, or bundles of different tasks,
    stop the start-up with a :class:`BundleError` that says what to do. Labels in one studies folder are of one task."""
    from lib.bundles.zoo import bundle_dirs

    configs = []
    for path in bundle_dirs(conf.get("bundle")):
        bundle = read_bundle(os.path.abspath(os.path.expanduser(path)))
        if any(c.name == bundle.name for c in configs):
            raise BundleError(f"two bundles named {bundle.name}: serve each directory once")
        config = BundleConfig()
        config.init(bundle.name, model_dir, conf, None, bundle=bundle)
        task = config.task
        wanted = str(conf.get("task") or "").strip().lower()
        if wanted and wanted != task.name:
            served = f" ({dict(TASKS[wanted].labels)})" if wanted in TASKS else ""
            raise BundleError(f"bundle {bundle.root} segments {', '.join(f'{n} {v}' for n, v in bundle.labels.items())} "
                              f"(task '{task.name}'), but the served task is '{wanted}'{served}: "
                              f"start with --conf task {task.name} (and studies labelled for it), or leave --conf task out")
        TASKS.setdefault(task.name, task)
        conf["task"] = task.name
        try:  # a model.pt that does not fit the bundle's own network stops the start-up, naming the file
            config.served.network("cpu")
        except Exception as exc:
            raise BundleError(f"bundle {bundle.name}: {exc}") from None
        configs.append(config)
    return configs
