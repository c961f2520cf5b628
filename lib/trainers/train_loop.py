"""The segmentation training loop (one process, or one rank of a DDP run), for DiNTS and the UNet.

The model-zoo bundle's ``train.yaml``: ``TopologyInstance`` + ``DiNTS`` from the architecture code (or the
spleen bundle's ``UNet``), DiceCE (``include_background`` false, softmax, squared_pred, batch), SGD (lr 0.025,
momentum 0.9, weight decay 4e-5) with StepLR (gamma 0.5), AMP on CUDA, class-balanced crops, sliding-window
validation with mean Dice per class of the task. With N processes the learning rate is N x (and, by
``scale_schedule``, the epochs, step and interval, see :func:`lib.trainers.tasks.scale_schedule`). The best
checkpoint is published atomically with ``save_checkpoint`` (architecture, network and class count embedded),
so the running server's infer task loads it on its next request. The run's settings are one
:class:`lib.trainers.train_config.TrainConfig`.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from lib.clicks import WithGuidance
from lib.networks.arch_code import arch_code_from_mapping
from lib.networks.factory import build_network, embedded_arch, extract_state_dict, file_checksum, load_checkpoint, load_network, save_checkpoint
from lib.trainers.click_simulation import ClickSimulation
from lib.trainers.data import train_loader, val_loader
from lib.trainers.distributed import all_sum, broadcast_module, partition, run_rank
from lib.trainers.train_config import TrainConfig
from lib.trainers.validation import autocast, validate

logger = logging.getLogger(__name__)


def same_arch(a, b) -> bool:
    return (a is not None and b is not None and a.node_a.shape == b.node_a.shape and a.arch_code_a.shape == b.arch_code_a.shape
            and (a.node_a == b.node_a).all() and (a.arch_code_a == b.arch_code_a).all() and (a.arch_code_c == b.arch_code_c).all())


def train_worker(rank: int, world_size: int, cfg: TrainConfig) -> None:
    run_rank(cfg.name, _train, rank, world_size, cfg)


def _start_state(cfg: TrainConfig, arch):
    """The current weights' state dict when they belong to this network (and ``arch``): fine-tuning; else None."""
    path = cfg.start_weights
    if not path or not os.path.exists(path) or not cfg.finetune:
        return None, "from scratch (no current weights)" if cfg.finetune else "from scratch (finetune false)"
    try:
        ckpt = load_checkpoint(path)
        meta = ckpt.get("meta", {}) if isinstance(ckpt.get("meta"), dict) else {}
        if (str(meta.get("network", cfg.network)) != cfg.network or int(meta.get("num_classes", cfg.num_classes)) != cfg.num_classes
                or int(meta.get("in_channels", 1)) != cfg.in_channels):
            return None, f"from scratch ({os.path.basename(path)} is another network, task or model kind)"
        if cfg.network != "dints":
            state = {k: v.float() if v.is_floating_point() else v for k, v in extract_state_dict(ckpt).items()}
            return state, f"fine-tuning {os.path.basename(path)}"
        ckpt_arch = embedded_arch(ckpt)
        if ckpt_arch is None and cfg.current_arch:  # a bare state dict (the bundle's model.pt)
            ckpt_arch = arch_code_from_mapping(cfg.current_arch)
        if not same_arch(ckpt_arch, arch):
            return None, f"from scratch (architecture differs from {os.path.basename(path)})"
        if float(meta.get("channel_mul", cfg.channel_mul)) != float(cfg.channel_mul):
            return None, f"from scratch (channel_mul differs from {os.path.basename(path)})"
        state = {k: v.float() if v.is_floating_point() else v for k, v in extract_state_dict(ckpt).items()}
        return state, f"fine-tuning {os.path.basename(path)}"
    except Exception as exc:  # unreadable or foreign weights: train from scratch, say why
        return None, f"from scratch ({type(exc).__name__}: {exc})"


def _train(rank, world_size, cfg: TrainConfig, device, progress):
    from monai.losses import DiceCELoss
    from torch.nn.parallel import DistributedDataParallel

    is_main = rank == 0
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    name, task = cfg.name, cfg.the_task()
    arch = arch_code_from_mapping(cfg.arch_code, cfg.arch_file) if cfg.arch_code is not None else None
    net = build_network(cfg.network, cfg.num_classes, arch, cfg.channel_mul, cfg.in_channels, cfg.network_options)
    described = arch.describe() + f", channel_mul {cfg.channel_mul}" if arch is not None else cfg.network
    state, start = _start_state(cfg, arch)
    if state is not None:
        net.load_state_dict(state)
    net = net.to(device)
    broadcast_module(net, world_size)
    if is_main:
        print(f"[{name}] {described}: {start}; "
              f"{len(cfg.items_train)} training / {len(cfg.items_val)} validation images; {world_size} process(es)", flush=True)
    progress.update(start=start)

    model = DistributedDataParallel(net, find_unused_parameters=True) if world_size > 1 else net
    items_t = partition(cfg.items_train, rank, world_size)
    items_v = partition(cfg.items_val, rank, world_size, even=False)
    crop = cfg.crop_size
    loader_t = train_loader(task, items_t, cfg.spacing, crop, cfg.num_crops, cfg.batch_size, cfg.flip_prob,
                            cfg.num_workers, cfg.seed + 1000 * rank)
    loader_v = val_loader(task, items_v, cfg.spacing) if items_v else []

    loss_fn = DiceCELoss(include_background=cfg.include_background, to_onehot_y=True, softmax=True, squared_pred=True,
                         batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = cfg.make_optimizer(model.parameters(), world_size)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=0.5)
                 if cfg.lr_step_epochs > 0 else None)
    scaler = torch.amp.GradScaler("cuda") if amp else None

    # an interactive network learns from simulated clicks and is validated in its automatic mode (no clicks)
    simulate = (ClickSimulation(task.num_classes, cfg.spacing, cfg.sigma_mm, cfg.no_click_prob, cfg.initial_clicks,
                                cfg.click_rounds, cfg.deepest_prob, seed=cfg.seed + 1000 * rank,
                                focus_weight=cfg.focus_weight) if cfg.interactive else None)

    def evaluate(m):
        m = WithGuidance(m, task.num_classes) if simulate else m
        return validate(m, loader_v, cfg.val_roi_size, cfg.sw_batch_size, cfg.sw_overlap, device, amp, world_size,
                        task.class_names)

    # The score to beat: the model the server uses now, on the same validation images.
    baseline = None
    if cfg.publish_policy == "improve" and cfg.items_val:
        current = cfg.current_weights
        if current and os.path.exists(current):
            try:
                if state is not None:  # the starting point is the current model
                    cur_net = net
                else:
                    cur_net, _ = load_network(current, arch_code_from_mapping(cfg.current_arch) if cfg.current_arch else None,
                                              cfg.channel_mul, cfg.num_classes, cfg.network, cfg.in_channels)
                    cur_net = cur_net.to(device)
                baseline = evaluate(cur_net)["mean_dice"]
            except Exception as exc:
                if is_main:
                    print(f"[{name}] current model not scored ({type(exc).__name__}: {exc}); any result is published", flush=True)
        if is_main:
            print(f"[{name}] current model's validation mean Dice: {baseline}", flush=True)
    progress.update(baseline_mean_dice=baseline)

    best = {"mean_dice": baseline, "epoch": 0 if baseline is not None else None, "published": False}
    epochs = cfg.epochs
    t_start = time.time()
    for epoch in range(epochs):
        t0 = time.time()
        model.train()
        losses = []
        for batch in loader_t:
            inputs, labels = batch["image"].to(device), batch["label"].to(device).long()
            if simulate:
                inputs = simulate(model, inputs, labels)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                logits = model(inputs)
                loss = loss_fn(logits, labels)
                if simulate:
                    loss = loss + simulate.focus_loss(logits, labels)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            losses.append(float(loss.detach()))
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        sums = all_sum([sum(losses), len(losses)], device, world_size)
        record = {"loss": sums[0] / max(1, sums[1]), "lr": lr}
        if cfg.items_val and ((epoch + 1) % cfg.val_interval == 0 or epoch + 1 == epochs):
            val = evaluate(model)
            record["dice"], record["mean_dice"] = val["dice"], val["mean_dice"]
            score = val["mean_dice"] if val["mean_dice"] is not None else -1.0
            better = best["mean_dice"] is None or score > best["mean_dice"]
            if cfg.publish_policy == "always" or better:
                if better:
                    best.update({"mean_dice": score, "epoch": epoch + 1, "dice": val["dice"]})
                if is_main:
                    _publish(net, arch, cfg, epoch + 1, val)
                    record["published"] = True
                best["published"] = True
        elif not cfg.items_val and epoch + 1 == epochs and is_main:
            _publish(net, arch, cfg, epoch + 1, None)  # nothing to validate on: publish the last weights
            record["published"] = True
            best["published"] = True
        progress.epoch(epoch + 1, epochs, record, time.time() - t0)

    if is_main:
        published = cfg.trained_file if best["published"] else None
        summary = {"best": best, "published_file": published,
                   "published_checksum": file_checksum(published) if published else None,
                   "seconds": round(time.time() - t_start, 1)}
        if not best["published"]:
            summary["not_published_reason"] = (f"validation mean Dice never beat the current model's {baseline:.4f}"
                                               if baseline is not None else "no validation result")
        progress.close("DONE", **summary)
        print(f"[{name}] done: best mean Dice {best['mean_dice']} at epoch {best['epoch']}; "
              f"{'published ' + published if published else 'nothing published: ' + summary['not_published_reason']}", flush=True)


def _publish(net, arch, cfg: TrainConfig, epoch, val) -> None:
    meta = {
        "profile": cfg.profile, "channel_mul": cfg.channel_mul, "spacing": list(cfg.spacing),
        "network": cfg.network, "num_classes": cfg.num_classes, "labels": dict(cfg.the_task().labels),
        "in_channels": cfg.in_channels, "interactive": bool(cfg.interactive),
        "epoch": epoch, "validation": val, "trained_on": [d["id"] for d in cfg.items_train],
        "validated_on": [d["id"] for d in cfg.items_val], "arch_file": cfg.arch_file,
        "task": cfg.task, "model": cfg.name, "saved": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    save_checkpoint(net, arch, cfg.trained_file, meta=meta, half=False)
    print(f"[{cfg.name}] epoch {epoch}: published {cfg.trained_file} ({file_checksum(cfg.trained_file)})", flush=True)
