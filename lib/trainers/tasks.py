"""MONAI Label train tasks: ``dints_search`` (architecture search) and ``<network>_<task>`` (training; by
default ``dints_pancreas``).

MONAI Label runs a train request in a child process (``python -m monailabel.interfaces.utils.app -m train``),
shows its output lines in ``GET /train`` and kills it (with its children) on ``DELETE /train``. Everything
these tasks publish is written atomically, so a stopped run leaves the previous files intact.
Request parameters and defaults: ``SEARCH_PARAMS`` / ``TRAIN_PARAMS`` (also shown in ``/info``), from the table
``request_params.toml`` beside this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import tomllib
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.train import TrainTask

from lib.datastore.names import name_problem
from lib.params import Param, config_defaults, parse_request
from lib.profiles import NETWORK_TITLES, Profile
from lib.task import SegmentationTask
from lib.trainers.datalist import halves_by_hash, labelled_datalist, split_file, stable_split
from lib.trainers.distributed import launch, resolve_world
from lib.trainers.progress import read_stats
from lib.trainers.train_config import TrainConfig

logger = logging.getLogger(__name__)

def _params(group: str) -> tuple[Param, ...]:
    """One group of ``request_params.toml`` (beside this file) as :class:`lib.params.Param`s."""
    out = []
    for e in _REQUEST_PARAMS[group]:
        default = tuple(e["default"]) if e["kind"] in ("int3", "floats") else e["default"]
        out.append(Param(e["name"], default, e["kind"], e["doc"], tuple(e["bounds"]) if "bounds" in e else None))
    return tuple(out)


_REQUEST_PARAMS = tomllib.loads(Path(__file__).with_name("request_params.toml").read_text(encoding="utf-8"))
COMMON_PARAMS = _params("common")
SEARCH_PARAMS = _params("search") + COMMON_PARAMS
TRAIN_PARAMS = _params("train") + COMMON_PARAMS
INTERACTIVE_PARAMS = _params("interactive")


ARCH_CHOICES = ("", "auto", "searched", "shipped")


def unet_description(options: dict) -> str:
    """How the stats name a UNet: its channels and residual units (the spleen bundle's unless ``options`` say)."""
    from lib.networks.factory import SPLEEN_UNET

    o = {**SPLEEN_UNET, **options}
    return f"UNet {'-'.join(str(c) for c in o['channels'])}, {o['num_res_units']} residual units"
ARCH_SUFFIXES = (".pth", ".pt")


def model_folder_file(model_dir: str, name: str, what: str) -> str:
    """``model_dir/name`` for a request parameter that names a file of the model folder; ValueError for anything
    that is not a plain file name there (a path, ``..``, another suffix): a request never names a server path."""
    problem = name_problem(name) if isinstance(name, str) else "is not a string"
    if problem or not name.endswith(ARCH_SUFFIXES):
        raise ValueError(f"{what} must be a file name in the model folder ending in {' or '.join(ARCH_SUFFIXES)} "
                         f"(not a path): {str(name)[:60]!r}" + (f" {problem}" if problem else ""))
    return os.path.join(model_dir, name)


class _SegmentationTrainBase(TrainTask):
    task_name = ""
    params: tuple[Param, ...] = ()
    # what a run needs (checked by the run itself, and by a train request before it starts one: data_problem)
    min_images = 2  # images with a usable final label (the run refuses fewer)
    min_training = 1  # of them on the training side of the train/validation split
    needs = "one to train on and one held out for validation"
    check_limit = 8  # a request checks this many labels at most (every one when there are fewer)

    def __init__(self, model_dir: str, task: SegmentationTask, profile: Profile, description: str):
        super().__init__(description)
        self.model_dir = model_dir
        self.task = task
        self.profile = profile
        self.stats_path = os.path.join(model_dir, f"train_stats_{self.task_name}.json")

    @property
    def split_path(self) -> str:
        """The persisted train/validation split of the task's labelled images (one per task, shared by its models)."""
        return os.path.join(self.model_dir, split_file(self.task.name))

    def config(self) -> dict:
        return config_defaults(self.params)

    def check_files(self, cfg: dict) -> None:
        """The request's file parameters name files of the model folder only (ValueError otherwise)."""
        if cfg.get("output"):
            model_folder_file(self.model_dir, cfg["output"], "output")
        if cfg.get("arch", "auto") not in ARCH_CHOICES:
            model_folder_file(self.model_dir, cfg["arch"], "arch")

    def stats(self) -> dict:
        return read_stats(self.stats_path)

    def data_problem(self, request: dict, datastore) -> str | None:
        """Why a run of ``request`` could not train on the datastore's labels, or None when it can: the run's own
        rules (usable final labels, the persisted train/validation split, not written here), found before it starts.

        Up to :attr:`check_limit` labels are checked (read against their image) as the run checks them; where there
        are more, there are enough, and the split is drawn over every labelled image."""
        cfg = parse_request(self.params, request)
        items, skipped = labelled_datalist(datastore, dict(self.task.labels), limit=self.check_limit)
        head = f"{self.task_name} cannot train:"
        if len(items) < self.min_images:
            found = f"found {len(items)}" + (f" ({', '.join(d['id'] for d in items)})" if items else "")
            reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
            return (f"{head} it needs at least {self.min_images} images with a usable final label ({self.needs}), {found}"
                    + (f"; {len(skipped)} label(s) cannot be used: {reasons}" if skipped else "")
                    + ". Label more images, then train again")
        ids = [d["id"] for d in items]
        if len(items) >= self.check_limit:
            ids = sorted(set(ids) | set(datastore.get_labeled_images()))
        val_ids = [v.strip() for v in cfg["val_ids"].split(",") if v.strip()]
        try:
            train, val, _ = stable_split(ids, self.split_path, cfg["val_split"], val_ids or None, cfg["reset_split"],
                                         write=False)
        except ValueError as exc:
            return f"{head} {exc}"
        if len(train) < self.min_training:
            return (f"{head} the train/validation split leaves {len(train)} of the {len(ids)} labelled images for training "
                    f"({len(val)} for validation: {', '.join(val)}) and it needs at least {self.min_training} "
                    f"({self.needs}). Label more images, or change val_ids / val_split")
        return None

    def _base_cfg(self, request: dict, datastore) -> tuple[dict, list[dict], list[dict]]:
        cfg = parse_request(self.params, request)
        cfg["device_type"], cfg["world_size"] = resolve_world(cfg)
        if not any(cfg["crop_size"]):
            cfg["crop_size"] = tuple(self.task.crop_size)
        items, self.skipped = labelled_datalist(datastore, dict(self.task.labels))
        if len(items) < 2:
            bad = "; ".join(f"{s['id']}: {s['reason']}" for s in self.skipped)
            raise ValueError(f"{self.task_name} needs at least 2 images with a usable final label, found {len(items)}"
                             + (f" (skipped {len(self.skipped)}: {bad})" if bad else ""))
        val_ids = [v.strip() for v in cfg["val_ids"].split(",") if v.strip()]
        train_ids, val_ids, split = stable_split([d["id"] for d in items], self.split_path, cfg["val_split"],
                                                 val_ids or None, cfg["reset_split"])
        by_id = {d["id"]: d for d in items}
        cfg.update({"task": self.task.name, "profile": self.profile.name, "spacing": tuple(self.profile.spacing),
                    "stats_path": self.stats_path,
                    "log_dir": os.path.join(self.model_dir, "logs", self.task_name, time.strftime("%Y%m%d-%H%M%S"))})
        return cfg, [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]

    def _stats_base(self, cfg, train, val) -> dict:
        return {"world_size": cfg["world_size"], "device": cfg["device_type"], "task": self.task.name,
                "labels": dict(self.task.labels), "training_ids": [d["id"] for d in train],
                "skipped": list(getattr(self, "skipped", [])),
                "validation_ids": [d["id"] for d in val],
                "request": {p.name: (list(cfg[p.name]) if isinstance(cfg[p.name], tuple) else cfg[p.name]) for p in self.params}}


def scale_schedule(cfg: dict) -> dict:
    """The bundle's ``multi_gpu_train.yaml``: with N processes, N x the epochs, the StepLR step and the validation
    interval (and N x the learning rate, applied by the loop), since each process sees 1/N of the images per epoch."""
    n = int(cfg["world_size"])
    if n > 1 and cfg.get("scale_schedule", True):
        cfg = {**cfg, "epochs": cfg["epochs"] * n, "lr_step_epochs": cfg["lr_step_epochs"] * n,
               "val_interval": cfg["val_interval"] * n}
    return cfg


class DiNTSSearchTask(_SegmentationTrainBase):
    """``POST /train/dints_search``: DiNTS architecture search on the labelled images."""

    task_name = "dints_search"
    params = SEARCH_PARAMS
    min_training = 2
    needs = "the search trains its weights and its architecture on two separate halves of the training images, " \
            "and holds one image out for validation"

    def __init__(self, model_dir: str, task: SegmentationTask, profile: Profile, default_output: str):
        super().__init__(model_dir, task, profile, f"DiNTS architecture search (TopologySearch supernet) on the final "
                                                   f"{task.name} labels")
        self._default_output = default_output

    def default_output(self) -> str:
        return self._default_output

    def __call__(self, request: dict, datastore) -> dict[str, Any]:
        from lib.trainers.search_loop import search_worker

        cfg, train, val = self._base_cfg(request, datastore)
        if cfg["warmup_epochs"] >= cfg["epochs"]:
            raise ValueError(f"warmup_epochs ({cfg['warmup_epochs']}) must be below epochs ({cfg['epochs']})")
        items_w, items_a = halves_by_hash(train)
        if not items_w or not items_a:
            raise ValueError(f"the search needs at least 2 training images (one per half), found {len(train)}")
        out = model_folder_file(self.model_dir, cfg["output"], "output") if cfg["output"] else self.default_output()
        cfg.update({"items_w": items_w, "items_a": items_a, "items_val": val, "out_file": out,
                    "search_params": {p.name: cfg[p.name] for p in SEARCH_PARAMS}})
        cfg["stats_base"] = dict(self._stats_base(cfg, train, val), weights_ids=[d["id"] for d in items_w],
                                 architecture_ids=[d["id"] for d in items_a], arch_file=out)
        logger.info(f"dints_search: {len(items_w)} weight / {len(items_a)} architecture / {len(val)} validation images, "
                    f"{cfg['world_size']} process(es) on {cfg['device_type']}")
        launch(search_worker, cfg["world_size"], cfg)
        return self.stats()


def recipe_params(params: tuple[Param, ...], recipe) -> tuple[Param, ...]:
    """``params`` with the defaults a model-zoo bundle's train config sets (:class:`lib.bundles.zoo.TrainRecipe`):
    its optimizer, learning rate, weight decay, StepLR step and loss ``include_background``."""
    if recipe is None:
        return params
    defaults = {"optimizer": recipe.optimizer, "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                "lr_step_epochs": recipe.lr_step_epochs, "include_background": recipe.include_background}
    return tuple(dataclasses.replace(p, default=defaults[p.name]) if p.name in defaults else p for p in params)


class SegmentationTrainTask(_SegmentationTrainBase):
    """``POST /train/<network>_<task>``: train the served network on every final label, publish the best."""

    params = TRAIN_PARAMS

    def __init__(self, name: str, model_dir: str, task: SegmentationTask, network: str, profile: Profile, arch_file: str,
                 weights: list[str], trained_file: str, searched_arch_file: str, interactive: bool = False,
                 sigma_mm: float = 5.0, network_options: dict | None = None, recipe=None, title: str = ""):
        self.task_name = name
        self.interactive, self.sigma_mm = bool(interactive), float(sigma_mm)
        self.params = recipe_params(TRAIN_PARAMS + (INTERACTIVE_PARAMS if self.interactive else ()), recipe)
        self.network_options = dict(network_options or {})
        self.momentum = recipe.momentum if recipe is not None else 0.9  # SGD's (the other optimizers have none)
        kind = "interactive (DeepEdit-style, simulated clicks)" if interactive else NETWORK_TITLES[network]
        super().__init__(model_dir, task, profile, title or f"Train the {kind} {task.name} model on the final labels")
        self.network = network
        self.arch_file = arch_file
        self.weights = list(weights)
        self.trained_file = trained_file
        self.searched_arch_file = searched_arch_file

    def resolve_arch(self, choice: str) -> str:
        if choice in ("", "auto"):
            return self.searched_arch_file if os.path.exists(self.searched_arch_file) else self.arch_file
        if choice == "searched":
            if not os.path.exists(self.searched_arch_file):
                raise ValueError(f"no searched architecture yet ({self.searched_arch_file}): run dints_search first")
            return self.searched_arch_file
        if choice == "shipped":
            return self.arch_file
        path = model_folder_file(self.model_dir, choice, "arch")
        if not os.path.exists(path):
            raise ValueError(f"no architecture file {choice} in the model folder")
        return path

    def train_config(self, request: dict, datastore) -> TrainConfig:
        """The one place a training run's configuration is built: the request parsed and checked (ValueError),
        the train/validation split of the datastore's labels, the schedule scaled to the processes, the
        architecture and weights to start from, and the profile's validation window where the request leaves it."""
        from lib.networks.arch_code import load_arch_code

        cfg, train, val = self._base_cfg(request, datastore)
        if not self.interactive:  # the loop reads the click settings of every run; these are their defaults
            cfg = {**parse_request(INTERACTIVE_PARAMS, {}), **cfg}
        cfg = scale_schedule(cfg)
        arch_file, arch, current_arch = None, None, None
        if self.network == "dints":
            arch_file = self.resolve_arch(cfg["arch"])
            arch = load_arch_code(arch_file)
            try:
                current_arch = load_arch_code(self.arch_file).as_dict() if os.path.exists(self.arch_file) else None
            except Exception:  # the profile's arch file is only needed for bare (bundle) checkpoints
                pass
        current = [w for w in self.weights if os.path.exists(w)]
        p = self.profile
        cfg.update({
            "name": self.task_name, "network": self.network, "num_classes": self.task.num_classes,
            "interactive": self.interactive, "in_channels": 1 + self.task.num_classes if self.interactive else 1,
            "sigma_mm": self.sigma_mm,
            "class_names": self.task.class_names,
            "arch_code": arch.as_dict() if arch is not None else None, "arch_file": arch_file, "current_arch": current_arch,
            "channel_mul": p.channel_mul, "trained_file": self.trained_file,
            "start_weights": current[-1] if current else None, "current_weights": current[-1] if current else None,
            "items_train": train, "items_val": val,
            "segmentation_task": self.task, "network_options": self.network_options, "momentum": self.momentum,
            "val_roi_size": p.roi_size if not any(cfg["val_roi_size"]) else cfg["val_roi_size"],
            "sw_batch_size": cfg["sw_batch_size"] or p.sw_batch_size,
            "sw_overlap": p.sw_overlap if cfg["sw_overlap"] < 0 else cfg["sw_overlap"],
        })
        described = arch.describe() if arch is not None else unet_description(self.network_options)
        cfg["stats_base"] = dict(self._stats_base(cfg, train, val), arch_file=arch_file, architecture=described,
                                 network=self.network, trained_file=self.trained_file,
                                 epochs=cfg["epochs"], lr_step_epochs=cfg["lr_step_epochs"], val_interval=cfg["val_interval"])
        return TrainConfig(**cfg)

    def __call__(self, request: dict, datastore) -> dict[str, Any]:
        from lib.trainers.train_loop import train_worker

        cfg = self.train_config(request, datastore)
        logger.info(f"{self.task_name}: {len(cfg.items_train)} training / {len(cfg.items_val)} validation images, "
                    f"{cfg.stats_base['architecture']}, {cfg.world_size} process(es) on {cfg.device_type}")
        launch(train_worker, cfg.world_size, cfg)
        return self.stats()
