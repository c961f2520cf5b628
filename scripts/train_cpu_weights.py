"""Train the ``cpu`` profile's shipped weights on generated phantoms, reproducibly.

    python scripts/train_cpu_weights.py --max-steps 1600 --minutes 120

(the shipped pancreas file came from exactly that command; a step budget keeps the schedule independent of the
machine's speed, ``--minutes`` alone trains for a wall-clock budget instead). ``--task spleen`` and
``--network unet`` train the other models (``model/pretrained_<network>_<task>_cpu.pt``).

Phantoms are generated from seeds 5000+ (training) and 9000+ (validation); the shipped sample
datastore uses seeds from 1000 and is never trained on. The network is the compact DiNTS of the ``cpu``
profile (or the seed bundle's UNet); crops are 64^3 at the profile's 2 mm spacing (128 mm of context), class-balanced as in the
bundle, without flips (left/right anatomy is a cue). The best checkpoint (pancreas Dice + half the tumour
Dice on the validation phantoms) is stored in fp16 with its architecture and training record, atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from lib.networks.arch_code import load_arch_code  # noqa: E402
from lib.networks.factory import build_network, count_parameters, save_checkpoint  # noqa: E402
from lib.profiles import get_profile, normalise_network  # noqa: E402
from lib.task import get_task  # noqa: E402
from lib.trainers.phantom_fit import fit, phantom_item, prepare  # noqa: E402

TRAIN_SEED_BASE = 5000
VAL_SEED_BASE = 9000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pancreas", help="pancreas or spleen")
    ap.add_argument("--network", default="dints", help="dints or unet")
    ap.add_argument("--out", default=None, help="default: model/pretrained_<network>_<task>_cpu.pt")
    ap.add_argument("--arch", default=str(REPO_ROOT / "model" / "dints_pancreas_cpu_arch.pth"), help="DiNTS architecture")
    ap.add_argument("--train-cases", type=int, default=48, help="training phantoms (seeds 5000...)")
    ap.add_argument("--val-cases", type=int, default=6, help="validation phantoms (seeds 9000...)")
    ap.add_argument("--crop", type=int, default=64, help="training crop edge in voxels at the profile spacing")
    ap.add_argument("--batch", type=int, default=2, help="crops per step")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=1_000_000, help="step budget (the learning rate decays over it)")
    ap.add_argument("--val-every", type=int, default=150, help="steps between validations")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    profile, task, network = get_profile("cpu"), get_task(args.task), normalise_network(args.network)
    spacing = task.spacing_for(profile.name)
    out = args.out or str(REPO_ROOT / "model" / profile.pretrained_file(network, task.name))
    roi = (args.crop,) * 3
    arch = load_arch_code(args.arch) if network == "dints" else None
    net = build_network(network, task.num_classes, arch, profile.channel_mul)
    print(f"network: {arch.describe() + f', channel_mul {profile.channel_mul}' if arch else network}, "
          f"{count_parameters(net) / 1e6:.2f} M parameters; task {task.name} {dict(task.labels)}")

    t0 = time.time()
    train = prepare(task, (phantom_item(s, task=task.name) for s in range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + args.train_cases)),
                    spacing, roi)
    val = prepare(task, (phantom_item(s, task=task.name) for s in range(VAL_SEED_BASE, VAL_SEED_BASE + args.val_cases)),
                  spacing, roi, crop_masks=False)
    print(f"data ready in {time.time() - t0:.0f}s", flush=True)

    def publish(model, dice, step):
        meta = {
            "profile": "cpu", "channel_mul": profile.channel_mul, "spacing": list(spacing), "task": task.name,
            "network": network, "num_classes": task.num_classes, "labels": dict(task.labels),
            "trained_on": f"phantoms, seeds {TRAIN_SEED_BASE}..{TRAIN_SEED_BASE + args.train_cases - 1}",
            "step": step, "validation_dice": dice,
        }
        save_checkpoint(model, arch, out, meta=meta, half=True)
        print(f"  saved {out} ({os.path.getsize(out) / 1e6:.1f} MB)", flush=True)

    result = fit(net, task, train, val, crop=args.crop, batch=args.batch, minutes=args.minutes, max_steps=args.max_steps,
                 lr=args.lr, val_every=args.val_every, on_best=publish, log=lambda m: print(m, flush=True))
    print(f"done: {result.steps} steps in {result.minutes:.1f} min; best validation Dice {result.best_dice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
