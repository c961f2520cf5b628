"""The configuration of one training run (``POST /train/<network>_<task>``), typed.

:meth:`lib.trainers.tasks.SegmentationTrainTask.train_config` builds it in one place from the request (the
parameters of ``TRAIN_PARAMS``, plus ``INTERACTIVE_PARAMS`` for the interactive model, parsed and range-checked
by :func:`lib.params.parse_request`), the datastore's labels and the task's files; :mod:`lib.trainers.train_loop`
reads it. A dataclass instead of a dict so that a misspelt or missing key is an error where the run is built,
not a ``KeyError`` in a child process half-way through a run. The request keys and their defaults stay defined
once, in the ``Param`` tables; this class only lists them with their types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

PUBLISH_POLICIES = ("improve", "best", "always")
OPTIMIZERS = ("sgd", "adam", "adamw", "novograd")


@dataclass
class TrainConfig:
    # ---- request parameters (TRAIN_PARAMS; val_roi_size / sw_batch_size / sw_overlap resolved to the profile's)
    epochs: int
    val_interval: int
    crop_size: tuple[int, ...]
    num_crops: int
    batch_size: int
    lr: float
    optimizer: str
    lr_step_epochs: int
    scale_schedule: bool
    weight_decay: float
    finetune: bool
    arch: str
    publish_policy: str
    val_roi_size: tuple[int, ...]
    sw_batch_size: int
    sw_overlap: float
    # ---- request parameters every train task shares (COMMON_PARAMS)
    device: str
    multi_gpu: bool
    gpus: str
    num_processes: int
    num_threads: int
    amp: bool
    seed: int
    num_workers: int
    val_split: float
    val_ids: str
    reset_split: bool
    flip_prob: float
    include_background: bool
    # ---- click simulation (INTERACTIVE_PARAMS; their defaults when the model is not interactive)
    no_click_prob: float
    initial_clicks: int
    click_rounds: int
    deepest_prob: float
    focus_weight: float
    # ---- where and how it runs
    device_type: str
    world_size: int
    task: str
    profile: str
    spacing: tuple[float, ...]
    stats_path: str
    log_dir: Optional[str]
    # ---- the model and its data
    name: str
    network: str
    num_classes: int
    interactive: bool
    in_channels: int
    sigma_mm: float
    class_names: dict[int, str]
    arch_code: Optional[dict[str, Any]]
    arch_file: Optional[str]
    current_arch: Optional[dict[str, Any]]
    channel_mul: float
    trained_file: str
    start_weights: Optional[str]
    current_weights: Optional[str]
    items_train: list[dict]
    items_val: list[dict]
    stats_base: dict[str, Any]
    # ---- what a model-zoo bundle adds (its task as read, its UNet arguments, its SGD momentum)
    segmentation_task: Any = None  # lib.task.SegmentationTask; None: the named task of lib.task.TASKS
    network_options: dict[str, Any] = field(default_factory=dict)
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.publish_policy not in PUBLISH_POLICIES:
            raise ValueError("publish_policy must be improve, best or always")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")

    def the_task(self):
        """The task the run trains (a bundle's, as read from it, travels with the configuration to every process)."""
        from lib.task import get_task

        return self.segmentation_task if self.segmentation_task is not None else get_task(self.task)

    def make_optimizer(self, params, world_size: int):
        """The recipe's optimizer, learning rate times the number of processes (the bundle's multi-GPU rule)."""
        import torch

        lr = self.lr * world_size
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)
        from monai.optimizers import Novograd

        return Novograd(params, lr=lr, weight_decay=self.weight_decay)
