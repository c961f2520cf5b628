"""``TaskConfig`` of the served segmentation model: reads the ``--conf`` options and builds its tasks.

``--conf task`` (:mod:`lib.task`) and ``--conf network`` (``dints`` or ``unet``) name the model
``<network>_<task>`` (``dints_pancreas`` by default). Every option is documented in README.md
("Configuration"). Paths are relative to the app's ``model/`` folder unless absolute.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig

from lib.infers.segmentation import SegmentationInfer
from lib.networks.factory import NetworkSpec, options_tuple, resolve
from lib.params import float_tuple, int_tuple, truthy
from lib.profiles import Profile, get_profile, normalise_network
from lib.runtime.served_model import ServedModel
from lib.task import SegmentationTask, get_task
from lib.transforms.calibration import CalibrationImages
from lib.transforms.load import DEFAULT_MAX_VOXELS, InputLimits

logger = logging.getLogger(__name__)

SAMPLE_STUDIES = Path(__file__).resolve().parents[2] / "sample-datastore"  # bf16's default calibration images


def model_name(conf: dict[str, str]) -> str:
    """``<network>_<task>`` of the ``--conf`` options (checked), e.g. ``dints_pancreas``, ``unet_spleen``."""
    return f"{normalise_network(conf.get('network'))}_{get_task(conf.get('task')).name}"


class SegmentationConfig(TaskConfig):
    """Task, network, profile, files and limits of the served segmentation model."""

    task: SegmentationTask
    network: str
    profile: Profile
    arch_file: str
    weights: list[str]
    limits: InputLimits

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.define_model(conf, model_dir)
        self.limits = InputLimits(
            max_voxels=int(float(conf.get("max_voxels", DEFAULT_MAX_VOXELS))),
            check_hu=truthy(conf.get("check_hu", "true"), "--conf check_hu"),
            max_sw_batch_size=int(conf.get("max_sw_batch_size", InputLimits.max_sw_batch_size)),
            max_windows=int(float(conf.get("max_windows", InputLimits.max_windows))),
        )
        # fast inference (issue 4): backend, TensorRT engine cache, coarse-to-fine CPU path, threads
        from lib.runtime.backends import BackendOptions, normalise_backend
        from lib.runtime.reduced_precision import cpu_precision
        from lib.runtime.traced_engines import normalise_precision
        from lib.runtime.fast_path import FastPathOptions
        from lib.transforms.components import DEFAULT_MIN_FRACTION, parse_min_fraction

        self.backend = normalise_backend(conf.get("backend", "auto"))
        self.backend_options = BackendOptions(
            roi_size=tuple(self.profile.roi_size),
            sw_batch_size=self.profile.sw_batch_size,
            trt_precision=normalise_precision(conf.get("trt_precision", "fp16")),
            batch_range=(1, int(conf.get("trt_max_batch", 8))),
            engine_dir=str(resolve(conf["engine_dir"], model_dir)) if conf.get("engine_dir") else None,
            cpu_precision=cpu_precision(conf.get("cpu_precision", "auto")),
            calibration=CalibrationImages(resolve(conf.get("calibration_dir", SAMPLE_STUDIES), model_dir), self.task,
                                          self.profile.spacing, self.profile.roi_size),
        )
        self.min_component_fraction = parse_min_fraction(conf.get("min_component_fraction", DEFAULT_MIN_FRACTION))
        self.fast_path = FastPathOptions(
            enabled=truthy(conf.get("fast_path", "true"), "--conf fast_path"),
            fine_overlap=float(conf["fine_overlap"]) if "fine_overlap" in conf else None,
            margin_mm=float(conf.get("fast_margin_mm", FastPathOptions.margin_mm)),
        )
        self.num_threads = int(conf.get("num_threads", 0))
        self.background_compile = truthy(conf.get("background_compile", "true"), "--conf background_compile")
        self.spec = NetworkSpec(self.network, self.task.num_classes, self.profile.channel_mul,
                                self.arch_file if self.network == "dints" else None, self.in_channels(),
                                options_tuple(self.network_options))
        # one served model (weights version, checksum, network per device, compiled package) for infer and scoring
        self.served = ServedModel(self.weights, self.spec, self.backend_options, self.background_compile)
        logger.info(
            f"{name}: task {self.task.name} {dict(self.task.labels)}, network {self.network}, profile {self.profile.name} "
            f"(spacing {self.profile.spacing}, roi {self.profile.roi_size}, overlap {self.profile.sw_overlap}); "
            f"arch {self.arch_file if self.network == 'dints' else '-'}; weights {self.weights}"
        )

    def define_model(self, conf: dict[str, str], model_dir: str) -> None:
        """What is served: ``task``, ``network``, ``profile``, ``arch_file``, ``weights`` and ``trained_file``."""
        self.task = get_task(conf.get("task"))
        self.network = normalise_network(conf.get("network"))
        base = get_profile(conf.get("profile"))
        self.profile = base.with_overrides(
            roi_size=int_tuple(conf.get("roi_size")),
            spacing=float_tuple(conf.get("spacing")) or self.task.spacing_for(base.name),
            sw_batch_size=int(conf["sw_batch_size"]) if "sw_batch_size" in conf else None,
            sw_overlap=float(conf["sw_overlap"]) if "sw_overlap" in conf else None,
            channel_mul=float(conf["channel_mul"]) if "channel_mul" in conf else None,
        )
        self.arch_file = str(resolve(conf.get("arch_file", self.default_arch_file(model_dir)), model_dir))
        pretrained = str(resolve(conf.get(self.conf_prefix + "model_file", self.profile.pretrained_file(self.weights_stem(), self.task.name)),
                                 model_dir))
        trained = str(resolve(self.profile.trained_file(self.weights_stem(), self.task.name), model_dir))
        # MONAI Label convention: the last existing path wins, so a model published by training
        # replaces the shipped one; --conf use_pretrained_only true pins the shipped weights.
        pretrained_only = truthy(conf.get("use_pretrained_only", "false"), "--conf use_pretrained_only")
        self.weights = [pretrained] if pretrained_only else [pretrained, trained]
        self.trained_file = trained
        self.network_options: dict = {}

    conf_prefix = ""  # the interactive model reads its own ``interactive_model_file``

    def weights_stem(self) -> str:
        """What the weights files are named after: ``<stem>_<task>_<profile>.pt``."""
        return self.network

    def in_channels(self) -> int:
        return 1  # the CT

    def default_arch_file(self, model_dir: str) -> str:
        """The profile's architecture file; for the bundle (gpu) also its ``search_code_*.pt`` if that is all there is."""
        default = os.path.join(model_dir, self.profile_arch_name())
        if os.path.exists(default):
            return default
        found = sorted(glob.glob(os.path.join(model_dir, "search_code_*.pt")))
        return found[-1] if found and self.profile.name == "gpu" else default

    def profile_arch_name(self) -> str:
        return self.profile.arch_file

    def infer(self):
        task = SegmentationInfer(self.served, self.task, self.profile, limits=self.limits, backend=self.backend,
                                 fast_path=self.fast_path, num_threads=self.num_threads,
                                 min_component_fraction=self.min_component_fraction)
        return {self.name: task}

    def searched_arch_file(self) -> str:
        """Where ``dints_search`` writes its architecture (the DiNTS train task trains it when present)."""
        return os.path.join(self.model_dir, f"dints_{self.task.name}_{self.profile.name}_arch_searched.pth")

    def trainer(self):
        """The model's train task (``POST /train/<model>``): trains it and publishes ``trained_file``."""
        from lib.trainers.tasks import SegmentationTrainTask

        return SegmentationTrainTask(self.name, self.model_dir, self.task, self.network, self.profile, arch_file=self.arch_file,
                                     weights=self.weights, trained_file=self.trained_file,
                                     searched_arch_file=self.searched_arch_file(), **self.trainer_options())

    def trainer_options(self) -> dict:
        """What the train task of this kind of model adds (the interactive model: its click simulation)."""
        return {}

    def search_trainer(self):
        """``dints_search`` train task: DiNTS architecture search on the final labels (DiNTS only)."""
        from lib.trainers.tasks import DiNTSSearchTask

        if self.network != "dints":
            return None
        return DiNTSSearchTask(model_dir=self.model_dir, task=self.task, profile=self.profile,
                               default_output=self.searched_arch_file())

    # ---- active learning (issue 5): scoring method and strategies ------------------------------------
    def scoring_options(self):
        """TTA options of ``dints_uncertainty`` from ``--conf scoring_*`` (README "Active learning")."""
        from lib.scoring.tta import TTAOptions

        c, d = self.conf, TTAOptions()
        return TTAOptions(
            samples=int(c.get("scoring_samples", d.samples)),
            max_shift=int(c.get("scoring_max_shift", d.max_shift)),
            tumor_weight=float(c.get("scoring_tumor_weight", d.tumor_weight)),
            flips=truthy(c.get("scoring_flips", "false"), "--conf scoring_flips"),
        )

    def scoring_spacing(self) -> tuple[float, ...]:
        return float_tuple(self.conf.get("scoring_spacing")) or tuple(self.profile.spacing)

    def scoring_method(self):
        """``dints_uncertainty``: TTA uncertainty per unlabelled image, stored with the model checksum."""
        from lib.scoring.dints_uncertainty import DiNTSUncertaintyScoring

        return {
            "dints_uncertainty": DiNTSUncertaintyScoring(
                served=self.served,
                task=self.task,
                spacing=self.scoring_spacing(),
                limits=self.limits,
                options=self.scoring_options(),
                threads=int(self.conf.get("scoring_threads", 1)),
                nice=int(self.conf.get("scoring_nice", 10)),
            )
        }

    def strategy(self, on_not_ready=None):
        """``random_fg`` (the default), ``uncertainty``, ``bald``, ``clasp_pe``, ``random`` and ``first``, sharing one reservation
        window (``al_reserve_seconds``); the scored ones read the ``dints_uncertainty`` scores of the current model."""
        from lib.activelearning.scored_strategies import BaldStrategy, ClaspPEStrategy, ForegroundRandomStrategy
        from lib.activelearning.strategies import FirstStrategy, RandomStrategy, Reservations, UncertaintyStrategy
        from lib.scoring.dints_uncertainty import options_hash

        reservations = Reservations(float(self.conf.get("al_reserve_seconds", 3600)))
        opts_hash = options_hash(self.scoring_options(), self.scoring_spacing())
        scored = dict(reservations=reservations, on_not_ready=on_not_ready, opts_hash=opts_hash)
        # listed first: the one 3D Slicer's and OHIF's Next Sample use until the annotator picks another.
        # foreground-aware random: in the 5-seed campaign (docs/benchmarks.md#active-learning) no strategy beat it
        return {
            "random_fg": ForegroundRandomStrategy(self.served.checksum, **scored),
            "uncertainty": UncertaintyStrategy(self.served.checksum, **scored),
            "bald": BaldStrategy(self.served.checksum, **scored),
            "clasp_pe": ClaspPEStrategy(self.served.checksum, **scored),
            "random": RandomStrategy(reservations),
            "first": FirstStrategy(reservations),
        }
