"""DiNTS architecture search (He et al., CVPR 2021) on the labelled volumes of the datastore.

Faithful to MONAI's tutorial / the model-zoo bundle's ``search.py``:

* supernet: ``TopologySearch`` inside ``DiNTS`` (instance norm, ReLU, ``use_downsample``);
* the training images split into a half for the network weights and a half for the architecture;
* weights: SGD (lr 0.025, momentum 0.9, weight decay 4e-5), halved at 40 % and 80 % of the post-warm-up
  epochs; architecture: ``log_alpha_a`` and ``log_alpha_c`` each with Adam (lr 0.001, betas 0.5/0.999);
* DiceCE with ``include_background`` false, as the bundle (``include_background`` request parameter);
* warm-up epochs train weights only; then every weight step is followed by an architecture step whose
  loss is DiceCE + w * (entropy of the path probabilities + entropy of the cell-op probabilities
  + |ram_cost_factor - usage / full usage| + 0.001 * topology entropy), w rising linearly from 0;
* sliding-window validation; the architecture is decoded with ``decode()``.

Differences from the reference, on purpose: the per-class NaN check tests each class (the reference tested
class 0 for every class); a "best" architecture is written only when validation improved, and only once
the architecture parameters have been trained (after warm-up); arch parameters are kept out of the SGD
optimizer; in multi-process runs gradients are averaged explicitly (``all_reduce``) so the requires-grad
switching between weight and architecture steps cannot confuse DDP.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from lib.networks.arch_code import ArchCode, save_arch_code
from lib.task import get_task
from lib.trainers.data import train_loader, val_loader
from lib.trainers.distributed import all_sum, average_gradients, broadcast_module, partition, run_rank
from lib.trainers.validation import autocast, validate

logger = logging.getLogger(__name__)

ARCH_PARAM_NAMES = ("log_alpha_a", "log_alpha_c")


def build_supernet(channel_mul: float, num_blocks: int, num_depths: int, num_classes: int, device: torch.device):
    from monai.networks.nets import DiNTS, TopologySearch

    with contextlib.redirect_stdout(io.StringIO()):
        space = TopologySearch(channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths,
                               use_downsample=True, device=str(device))
    net = DiNTS(dints_space=space, in_channels=1, num_classes=int(num_classes), use_downsample=True)
    return net.to(device), space


def arch_loss_terms(space, input_shape, ram_cost_factor: float) -> dict[str, torch.Tensor]:
    """The architecture regularisers of DiNTS (each a differentiable scalar)."""
    probs_a, _ = space.get_prob_a(child=True)
    entropy_a = -(probs_a * torch.log(probs_a + 1e-5)).mean()
    entropy_c = -(F.softmax(space.log_alpha_c, dim=-1) * F.log_softmax(space.log_alpha_c, dim=-1)).mean()
    topology = space.get_topology_entropy(probs_a)
    ram_full = space.get_ram_cost_usage(input_shape, full=True)
    ram_usage = space.get_ram_cost_usage(input_shape)
    ram_loss = torch.abs(ram_cost_factor - ram_usage / ram_full)
    return {"entropy_a": entropy_a, "entropy_c": entropy_c, "ram_cost": ram_loss, "topology": topology,
            "ram_usage_ratio": (ram_usage / ram_full).detach()}


def decode(space) -> ArchCode:
    node_a, arch_code_a, arch_code_c, arch_code_a_max = space.decode()
    return ArchCode(node_a=np.asarray(node_a).astype(np.int64), arch_code_a=np.asarray(arch_code_a).astype(np.int64),
                    arch_code_c=np.asarray(arch_code_c).astype(np.int64),
                    arch_code_a_max=np.asarray(arch_code_a_max).astype(np.int64)).validate()


def lr_decay(epoch: int, epochs: int, warmup: int, milestones=(0.4, 0.8)) -> float:
    """The reference's schedule: halve at each milestone fraction of the post-warm-up epochs."""
    span = max(1, epochs - warmup)
    return 0.5 ** int(np.sum([(epoch - warmup) / span > m for m in milestones]))


def search_worker(rank: int, world_size: int, cfg: dict) -> None:
    run_rank("dints_search", _search, rank, world_size, cfg)


def _trainable(on, off) -> None:
    """Alternate between the weight step and the architecture step: only ``on`` receives gradients."""
    for p in on:
        p.requires_grad_(True)
    for p in off:
        p.requires_grad_(False)


def _search(rank, world_size, cfg, device, progress):
    from monai.losses import DiceCELoss

    is_main = rank == 0
    amp = cfg["amp"] and device.type == "cuda"
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    task = get_task(cfg["task"])
    net, space = build_supernet(cfg["channel_mul"], cfg["num_blocks"], cfg["num_depths"], task.num_classes, device)
    broadcast_module(net, world_size)

    crop = cfg["crop_size"]
    items_w = partition(cfg["items_w"], rank, world_size)
    items_a = partition(cfg["items_a"], rank, world_size)
    items_v = partition(cfg["items_val"], rank, world_size, even=False)
    seed = cfg["seed"] + 1000 * rank
    loader_w = train_loader(task, items_w, cfg["spacing"], crop, cfg["num_crops"], cfg["batch_size"],
                            cfg["flip_prob"], cfg["num_workers"], seed)
    loader_a = train_loader(task, items_a, cfg["spacing"], crop, cfg["num_crops"], cfg["batch_size"],
                            cfg["flip_prob"], cfg["num_workers"], seed + 1)
    loader_v = val_loader(task, items_v, cfg["spacing"]) if items_v else []

    loss_fn = DiceCELoss(include_background=cfg["include_background"], to_onehot_y=True, softmax=True, squared_pred=True,
                         batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    arch_params = [space.log_alpha_a, space.log_alpha_c]
    weight_params = [p for n, p in net.named_parameters() if n.split(".")[-1] not in ARCH_PARAM_NAMES]
    lr0 = cfg["lr"] * world_size  # the bundle's multi-GPU scaling
    optimizer = torch.optim.SGD(weight_params, lr=lr0, momentum=0.9, weight_decay=cfg["weight_decay"])
    opt_a = torch.optim.Adam([space.log_alpha_a], lr=cfg["lr_arch"] * world_size, betas=(0.5, 0.999), weight_decay=0.0)
    opt_c = torch.optim.Adam([space.log_alpha_c], lr=cfg["lr_arch"] * world_size, betas=(0.5, 0.999), weight_decay=0.0)
    scaler = torch.amp.GradScaler("cuda") if amp else None

    epochs, warmup = cfg["epochs"], cfg["warmup_epochs"]
    best = {"mean_dice": None, "epoch": None}
    best_arch: ArchCode | None = None
    history: list[dict] = []
    arch_iter = iter(loader_a)
    t_start = time.time()

    def step(loss, opt_list, params):
        if scaler:
            scaler.scale(loss).backward()
            average_gradients(params, world_size)
            for o in opt_list:
                scaler.step(o)
            scaler.update()
        else:
            loss.backward()
            average_gradients(params, world_size)
            for o in opt_list:
                o.step()

    for epoch in range(epochs):
        t0 = time.time()
        lr = lr0 * lr_decay(epoch, epochs, warmup, cfg["lr_milestones"])
        for g in optimizer.param_groups:
            g["lr"] = lr
        net.train()
        w_losses, a_losses, terms_acc = [], [], {}
        combination = max(0.0, (epoch - warmup) / max(1, epochs - warmup))
        for batch in loader_w:
            inputs, labels = batch["image"].to(device), batch["label"].to(device).long()
            _trainable(weight_params, arch_params)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = loss_fn(net(inputs), labels)
            step(loss, [optimizer], weight_params)
            w_losses.append(float(loss.detach()))
            if epoch < warmup:
                continue
            try:
                batch_a = next(arch_iter)
            except StopIteration:
                arch_iter = iter(loader_a)
                batch_a = next(arch_iter)
            inputs_a, labels_a = batch_a["image"].to(device), batch_a["label"].to(device).long()
            _trainable(arch_params, weight_params)
            opt_a.zero_grad(set_to_none=True)
            opt_c.zero_grad(set_to_none=True)
            terms = arch_loss_terms(space, inputs.shape, cfg["ram_cost_factor"])
            with autocast(device, amp):
                seg_loss = loss_fn(net(inputs_a), labels_a)
            reg = terms["entropy_a"] + terms["entropy_c"] + terms["ram_cost"] + cfg["topology_weight"] * terms["topology"]
            loss_a = seg_loss + combination * reg
            step(loss_a, [opt_a, opt_c], arch_params)
            a_losses.append(float(loss_a.detach()))
            for k, v in terms.items():
                terms_acc.setdefault(k, []).append(float(v.detach()))
        for p in weight_params:
            p.requires_grad_(True)

        sums = all_sum([sum(w_losses), len(w_losses), sum(a_losses), len(a_losses)], device, world_size)
        record = {"loss": sums[0] / max(1, sums[1]), "lr": lr}
        if sums[3]:
            record["arch_loss"] = sums[2] / sums[3]
            record["arch_weight"] = combination
            record.update({k: float(np.mean(v)) for k, v in terms_acc.items()})

        validate_now = ((epoch + 1) % cfg["val_interval"] == 0 or epoch + 1 == epochs)
        if validate_now and cfg["items_val"]:
            val = validate(net, loader_v, cfg["val_roi_size"], cfg["sw_batch_size"], cfg["sw_overlap"],
                           device, amp, world_size, task.class_names)
            record["dice"] = val["dice"]
            record["mean_dice"] = val["mean_dice"]
            improved = (epoch >= warmup and val["mean_dice"] is not None
                        and (best["mean_dice"] is None or val["mean_dice"] > best["mean_dice"]))
            if improved:
                best = {"mean_dice": val["mean_dice"], "epoch": epoch + 1, "dice": val["dice"]}
                if is_main:
                    best_arch = decode(space)
                    _save(best_arch, cfg, best, history + [record], final=False)
                    record["saved"] = True
        history.append(record)
        progress.epoch(epoch + 1, epochs, record, time.time() - t0)

    if is_main:
        result = best_arch if best_arch is not None else decode(space)
        _save(result, cfg, best, history, final=True)
        from lib.visualize.arch_diagram import draw_architecture

        diagrams = draw_architecture(result, cfg["out_file"], title=f"DiNTS searched architecture ({result.describe()})")
        progress.close("DONE", arch_file=cfg["out_file"], diagram=diagrams, best=best, architecture=result.describe(),
                       seconds=round(time.time() - t_start, 1))
        print(f"[dints_search] done: {result.describe()}, best mean Dice {best['mean_dice']} at epoch {best['epoch']}; "
              f"saved {cfg['out_file']} and {', '.join(diagrams)}", flush=True)


def _save(arch: ArchCode, cfg: dict, best: dict, history: list, final: bool) -> None:
    save_arch_code(
        arch,
        cfg["out_file"],
        best_dsc=best["mean_dice"],
        best_epoch=best["epoch"],
        complete=final,
        search={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg["search_params"].items()},
        history=history,
        images={"weights": [d["id"] for d in cfg["items_w"]], "architecture": [d["id"] for d in cfg["items_a"]],
                "validation": [d["id"] for d in cfg["items_val"]]},
        saved=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
