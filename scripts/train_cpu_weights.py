"""Train the ``cpu`` profile's shipped weights on generated phantoms, reproducibly.

    python scripts/train_cpu_weights.py --out model/pretrained_dints_pancreas_cpu.pt

Phantoms are generated from seeds 5000+ (training) and 9000+ (validation); the shipped sample
datastore uses seeds from 1000 and is never trained on. The network is the compact DiNTS of the ``cpu``
profile; crops are 64^3 at the profile's 2 mm spacing (128 mm of context), class-balanced as in the
bundle. The result is stored in fp16 with its architecture and training record, atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.data import DataLoader, Dataset, MetaTensor  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.transforms import Compose  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from lib.configs.profiles import get_profile  # noqa: E402
from lib.data.phantom import make_phantom  # noqa: E402
from lib.metrics import dice_per_class  # noqa: E402
from lib.networks.arch_code import load_arch_code  # noqa: E402
from lib.networks.factory import build_dints, count_parameters, save_checkpoint  # noqa: E402
from lib.transforms.train import augmentation, preprocessing  # noqa: E402

TRAIN_SEED_BASE = 5000
VAL_SEED_BASE = 9000


def phantom_item(seed: int) -> dict:
    ph = make_phantom(seed, preset="train")
    affine = torch.as_tensor(ph.affine, dtype=torch.float64)
    return {
        "image": MetaTensor(torch.from_numpy(ph.image.astype(np.float32)), affine=affine),
        "label": MetaTensor(torch.from_numpy(ph.label.astype(np.uint8)), affine=affine),
        "seed": seed,
    }


def prepare(seeds, spacing, roi, crop_masks=True) -> list[dict]:
    pre = Compose(preprocessing(spacing, roi, load=False, with_crop_masks=crop_masks))
    out = []
    for i, s in enumerate(seeds):
        out.append(pre(phantom_item(s)))
        print(f"\r  prepared {i + 1}/{len(seeds)} phantoms", end="", flush=True)
    print()
    return out


def validate(net, cases, roi, overlap=0.25) -> dict[str, float]:
    net.eval()
    scores = []
    with torch.no_grad():
        for c in cases:
            logits = sliding_window_inference(c["image"][None].as_tensor(), roi, 4, net, overlap=overlap, mode="gaussian")
            pred = logits[0].argmax(0).numpy()
            scores.append(dice_per_class(pred, c["label"][0].numpy()))
    net.train()
    return {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO_ROOT / "model" / "pretrained_dints_pancreas_cpu.pt"))
    ap.add_argument("--arch", default=str(REPO_ROOT / "model" / "dints_pancreas_cpu_arch.pth"))
    ap.add_argument("--train-cases", type=int, default=48)
    ap.add_argument("--val-cases", type=int, default=6)
    ap.add_argument("--crop", type=int, default=64, help="training crop edge in voxels (at the profile spacing)")
    ap.add_argument("--batch", type=int, default=2, help="crops per step")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--val-every", type=int, default=150, help="steps between validations")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    profile = get_profile("cpu")
    roi = (args.crop,) * 3
    arch = load_arch_code(args.arch)
    net = build_dints(arch, profile.channel_mul)
    print(f"network: {arch.describe()}, channel_mul {profile.channel_mul}, {count_parameters(net) / 1e6:.2f} M parameters")

    t0 = time.time()
    train_cases = prepare(range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + args.train_cases), profile.spacing, roi)
    val_cases = prepare(range(VAL_SEED_BASE, VAL_SEED_BASE + args.val_cases), profile.spacing, roi, crop_masks=False)
    print(f"data ready in {time.time() - t0:.0f}s")

    ds = Dataset(train_cases, transform=Compose(augmentation(roi, num_samples=args.batch, flip_prob=0.0)))
    loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=1, persistent_workers=True)
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                         smooth_nr=1e-5, smooth_dr=1e-5)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-5)
    budget = args.minutes * 60.0
    start, step, best, history = time.time(), 0, -1.0, []
    net.train()
    done = False
    while not done:
        for batch in loader:
            elapsed = time.time() - start
            lr = args.lr * max(0.05, 1.0 - elapsed / budget)  # linear decay over the time budget
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = batch["image"], batch["label"]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} elapsed {elapsed / 60:.1f} min", flush=True)
            last = elapsed >= budget or step >= args.max_steps
            if step % args.val_every == 0 or last:
                scores = validate(net, val_cases, (96, 96, 96))
                history.append({"step": step, "minutes": round(elapsed / 60, 2), **scores})
                print(f"validation at step {step}: {json.dumps(scores)}", flush=True)
                metric = scores["pancreas"] + 0.5 * (0.0 if scores["tumor"] != scores["tumor"] else scores["tumor"])
                if metric > best:
                    best = metric
                    meta = {
                        "profile": "cpu", "channel_mul": profile.channel_mul, "spacing": list(profile.spacing),
                        "trained_on": f"phantoms seeds {TRAIN_SEED_BASE}..{TRAIN_SEED_BASE + args.train_cases - 1}",
                        "step": step, "validation_dice": scores, "history": history,
                    }
                    save_checkpoint(net, arch, args.out, meta=meta, half=True)
                    print(f"  saved {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)", flush=True)
            if last:
                done = True
                break
    print(f"done: {step} steps in {(time.time() - start) / 60:.1f} min; best validation {best:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
