"""Sliding-window validation of the train tasks: Dice per class of the task, summed over the ranks."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def autocast(device: torch.device, amp: bool, dtype: torch.dtype | None = None):
    """Mixed precision on CUDA only (``dtype``: autocast's default fp16 unless given); nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else torch.autocast("cuda")
    return contextlib.nullcontext()


@torch.no_grad()
def validate(net: torch.nn.Module, loader, roi, sw_batch_size: int, overlap: float, device: torch.device,
             amp: bool, world_size: int, class_names: dict[int, str]) -> dict:
    """Sliding-window Dice per class over this rank's validation images, summed over ranks.

    A class absent from both prediction and reference of an image gives no evidence for that class and is
    skipped for that class only (the reference implementation tested class 0's NaN for every class).
    """
    from monai.inferers import sliding_window_inference

    from lib.metrics import dice_per_class
    from lib.trainers.distributed import all_sum

    module = net.module if hasattr(net, "module") else net
    was_training = module.training
    module.eval()
    names = list(class_names.values())
    sums = [0.0] * len(names)
    counts = [0.0] * len(names)
    for batch in loader:
        image = batch["image"].to(device)
        with autocast(device, amp):
            logits = sliding_window_inference(image, roi, sw_batch_size, module, overlap=overlap, mode="gaussian")
        pred = logits.float().argmax(1)[0].cpu().numpy()
        truth = np.asarray(batch["label"][0, 0].cpu().numpy()).astype(np.int64)
        for c, (name, value) in enumerate(dice_per_class(pred, truth, class_names).items()):
            if value == value:  # not NaN, checked for this class
                sums[c] += value
                counts[c] += 1
    totals = all_sum(sums + counts, device, world_size)
    sums, counts = totals[: len(names)], totals[len(names):]
    per_class = {name: (sums[c] / counts[c] if counts[c] else None) for c, name in enumerate(names)}
    present = [v for v in per_class.values() if v is not None]
    module.train(was_training)
    return {"dice": per_class, "mean_dice": float(np.mean(present)) if present else None, "images": int(max(counts or [0]))}
