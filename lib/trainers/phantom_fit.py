"""The offline fitter: train a network on in-memory phantoms within a step or wall-clock budget.

Not a MONAI Label train task (those read the datastore, see :mod:`lib.trainers.tasks`): used by
``scripts/train_cpu_weights.py`` (the shipped cpu weights), the active-learning benchmark (a fixed retraining
budget per round) and ``benchmarks/models.py`` (one budget for every network). Volumes are preprocessed once
(the task's preprocessing and dilated class masks) and only the random crops and augmentations run per step.

The crops are drawn on the CPU; the network runs on ``device`` (a CUDA GPU when one is there: the shipped
weights' steps then take a fraction of the 2-core CPU's minutes), with bf16 autocast on CUDA when ``amp`` is set
(bf16 needs no gradient scaler).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import Compose

from lib.metrics import dice_per_class
from lib.task import SegmentationTask
from lib.trainers.validation import autocast
from lib.transforms.train import augmentation, preprocessing


def fit_score(dice: dict[str, float], task: SegmentationTask) -> float:
    """What the fitter keeps the best of: the first label's Dice plus half the mean of the others' (NaN as 0)."""
    names = list(task.labels)
    rest = [0.0 if dice[n] != dice[n] else dice[n] for n in names[1:]]
    return dice[names[0]] + (0.5 * float(np.mean(rest)) if rest else 0.0)


def phantom_item(seed: int, preset: str = "train", task: str = "pancreas", **overrides) -> dict:
    """One generated phantom as the ``{"image", "label"}`` MetaTensors the transforms expect (the task's label)."""
    from lib.data.phantom import make_phantom, task_label

    ph = make_phantom(seed, preset=preset, **overrides)
    label = task_label(ph, task)
    affine = torch.as_tensor(ph.affine, dtype=torch.float64)
    # "no_channel" tells EnsureChannelFirstd to add the channel axis, as it would for a file read from disk;
    # without it some spatial transforms later meet a 3D array and fail on a minority of crops
    meta = {"original_channel_dim": "no_channel"}
    return {
        "image": MetaTensor(torch.from_numpy(ph.image.astype(np.float32)), affine=affine, meta=dict(meta)),
        "label": MetaTensor(torch.from_numpy(label.astype(np.uint8)), affine=affine, meta=dict(meta)),
        "seed": seed,
    }


def prepare(task: SegmentationTask, items: Iterable[dict], spacing: Sequence[float], roi: Sequence[int],
            crop_masks: bool = True, progress: bool = True) -> list[dict]:
    """Run the deterministic preprocessing once per volume."""
    pre = Compose(preprocessing(task, spacing, roi, load=False, with_crop_masks=crop_masks))
    return _collect((pre(item) for item in items), progress)


def _collect(prepared: Iterable[dict], progress: bool = True) -> list[dict]:
    out = []
    for i, item in enumerate(prepared):
        out.append(item)
        if progress:
            print(f"\r  prepared {i + 1} volumes", end="", flush=True)
    if progress:
        print()
    return out


def _prepared_phantom(args: tuple) -> dict:
    seed, task, spacing, roi, crop_masks = args
    return prepare(task, [phantom_item(seed, task=task.name)], spacing, roi, crop_masks, progress=False)[0]


def prepare_phantoms(task: SegmentationTask, seeds: Sequence[int], spacing: Sequence[float], roi: Sequence[int],
                     crop_masks: bool = True, workers: int = 1) -> list[dict]:
    """Generate and preprocess the phantoms of ``seeds`` (in that order), in ``workers`` processes: the same
    volumes whatever the count, since each phantom is a pure function of its seed."""
    seeds = list(seeds)
    if workers <= 1 or len(seeds) <= 1:
        return prepare(task, (phantom_item(s, task=task.name) for s in seeds), spacing, roi, crop_masks)
    jobs = [(s, task, tuple(spacing), tuple(roi), crop_masks) for s in seeds]
    # spawned, not forked: a child forked from a process whose torch thread pools are up can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return _collect(pool.map(_prepared_phantom, jobs))


def validate(net: torch.nn.Module, cases: Sequence[dict], roi=(96, 96, 96), overlap: float = 0.25,
             class_names: dict[int, str] | None = None, device: torch.device | str = "cpu",
             amp: bool = False) -> dict[str, float]:
    """Mean Dice per class on the model grid (NaN-free mean: a class absent from both sides is skipped)."""
    was_training = net.training
    net.eval()
    scores = []
    device = torch.device(device)
    with torch.no_grad(), autocast(device, amp, torch.bfloat16):
        for c in cases:
            image = c["image"].as_tensor() if isinstance(c["image"], MetaTensor) else c["image"]
            logits = sliding_window_inference(image[None].to(device), roi, 4, net, overlap=overlap, mode="gaussian")
            pred = logits[0].float().argmax(0).cpu().numpy()
            label = c["label"].as_tensor() if isinstance(c["label"], MetaTensor) else c["label"]
            scores.append(dice_per_class(pred, np.asarray(label[0]), class_names))
    net.train(was_training)
    out = {}
    for k in scores[0]:
        vals = [s[k] for s in scores if s[k] == s[k]]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


@dataclass
class FitResult:
    steps: int
    minutes: float
    best_score: float
    best_dice: dict
    history: list = field(default_factory=list)


def fit(
    net: torch.nn.Module,
    task: SegmentationTask,
    train_cases: Sequence[dict],
    val_cases: Sequence[dict] = (),
    *,
    crop: int = 64,
    batch: int = 2,
    minutes: float = 10.0,
    max_steps: int = 1_000_000,
    lr: float = 2e-3,
    val_every: int = 150,
    val_roi=(96, 96, 96),
    flip_prob: float = 0.0,
    clicks=None,
    on_best: Callable[[torch.nn.Module, dict, int], None] | None = None,
    log: Callable[[str], None] = print,
    device: torch.device | str = "cpu",
    amp: bool = False,
    workers: int = 1,
) -> FitResult:
    """AdamW on class-balanced crops, linear learning-rate decay over the budget.

    The budget is whichever ends first of ``minutes`` and ``max_steps``; give a step count (and generous
    minutes) for a run whose schedule, and so whose result, does not depend on the machine's speed.

    ``on_best(net, dice, step)`` is called whenever the validation score (the first label's Dice + half the
    mean of the others', e.g. pancreas + tumour / 2) improves; without validation cases it is called once at the end.
    ``clicks`` (a :class:`lib.trainers.click_simulation.ClickSimulation`): train an interactive network on simulated
    clicks; it is validated in its automatic mode (no clicks). ``device``: where the network runs (it is moved
    there); ``amp``: bf16 autocast for the forward passes on CUDA; ``workers``: processes drawing the crops.
    """
    from lib.clicks import WithGuidance

    roi = (crop,) * 3
    ds = Dataset(list(train_cases), transform=Compose(augmentation(task, roi, num_samples=batch, flip_prob=flip_prob)))
    loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=max(1, int(workers)), persistent_workers=True)
    device = torch.device(device)
    net.to(device)
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                         smooth_nr=1e-5, smooth_dr=1e-5)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    budget = minutes * 60.0
    start, step, best, best_dice, history = time.time(), 0, -math.inf, {}, []
    net.train()
    finished = False
    while not finished:
        for batch_data in loader:
            elapsed = time.time() - start
            progress = max(elapsed / budget, step / max_steps)
            cur_lr = lr * max(0.05, 1.0 - progress)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            opt.zero_grad(set_to_none=True)
            image, label = batch_data["image"].to(device), batch_data["label"].to(device)
            with autocast(device, amp, torch.bfloat16):
                inputs = clicks(net, image, label) if clicks else image
                logits = net(inputs)
            logits = logits.float()
            loss = loss_fn(logits, label)
            if clicks:
                loss = loss + clicks.focus_loss(logits, label)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                log(f"step {step} loss {loss.item():.4f} lr {cur_lr:.2e} elapsed {elapsed / 60:.1f} min")
            finished = elapsed >= budget or step >= max_steps
            if val_cases and (step % val_every == 0 or finished):
                dice = validate(WithGuidance(net, task.num_classes) if clicks else net, val_cases, val_roi,
                                class_names=task.class_names, device=device, amp=amp)
                history.append({"step": step, "minutes": round(elapsed / 60, 2), **dice})
                log(f"validation at step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()))
                score = fit_score(dice, task)
                if score > best:
                    best, best_dice = score, dice
                    if on_best:
                        on_best(net, dice, step)
            if finished:
                break
    if not val_cases and on_best:
        on_best(net, {}, step)
    net.eval()
    net.to("cpu")  # what callers save or run next expects the weights on the CPU
    return FitResult(steps=step, minutes=(time.time() - start) / 60, best_score=best, best_dice=best_dice, history=history)
