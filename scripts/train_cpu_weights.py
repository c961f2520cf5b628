"""Train the ``cpu`` profile's shipped weights on generated phantoms, reproducibly.

    python scripts/train_cpu_weights.py --max-steps 1600 --minutes 120

(the shipped pancreas file came from exactly that command; a step budget keeps the schedule independent of the
machine's speed, ``--minutes`` alone trains for a wall-clock budget instead). ``--task spleen`` and
``--network unet`` train the other models (``model/pretrained_<network>_<task>_cpu.pt``).

``--interactive`` trains the DeepEdit-style model (``model/pretrained_deepedit_<task>_cpu.pt``: DiNTS with
1 + classes input channels) on simulated clicks (:mod:`lib.trainers.click_simulation`), starting from the
automatic model's weights (``--init``; the guidance channels' stem weights start at zero, so step 0 is the
automatic model), and keeps the last weights (its automatic-mode validation Dice is logged, not selected on)::

    python scripts/train_cpu_weights.py --interactive --max-steps 1000 --minutes 120 --out round1.pt
    python scripts/train_cpu_weights.py --interactive --init round1.pt --max-steps 1000 --minutes 120 \\
        --lr 1e-3 --no-click-prob 0.2 --click-rounds 3 --deepest-prob 0.5 --out round2.pt
    python scripts/train_cpu_weights.py --interactive --init round2.pt --max-steps 1000 --minutes 75 \\
        --lr 5e-4 --no-click-prob 0.2 --click-rounds 4 --deepest-prob 0.8

(the shipped ``pretrained_deepedit_pancreas_cpu.pt`` came from exactly these three runs).

``--device`` (default ``auto``: a CUDA GPU when there is one) moves the network's steps there, ``--amp`` adds
bf16 autocast on the GPU and ``--workers N`` generates the phantoms and draws the crops in N processes: a step budget
gives the same schedule on any machine, far sooner on a GPU.

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

from lib.data.seeds import TRAIN_SEED_BASE, VAL_SEED_BASE, seed_range, seed_span  # noqa: E402
from lib.networks.arch_code import load_arch_code  # noqa: E402
from lib.networks.factory import build_network, count_parameters, save_checkpoint  # noqa: E402
from lib.profiles import get_profile, normalise_network  # noqa: E402
from lib.task import get_task  # noqa: E402
from lib.trainers.click_simulation import ClickSimulation  # noqa: E402
from lib.trainers.distributed import resolve_device  # noqa: E402
from lib.trainers.phantom_fit import fit, prepare_phantoms  # noqa: E402


def expand_from(net: torch.nn.Module, path: str) -> str:
    """Load an automatic model's weights into the interactive ``net``: the stem's guidance channels start at zero."""
    from lib.networks.factory import extract_state_dict, load_checkpoint

    state = {k: v.float() for k, v in extract_state_dict(load_checkpoint(path)).items()}
    own = net.state_dict()
    widened = []
    for k, v in state.items():
        if k in own and own[k].shape != v.shape and v.dim() == own[k].dim() and v.shape[1] == 1 and own[k].shape[1] > 1:
            w = torch.zeros_like(own[k])
            w[:, :1] = v
            state[k] = w
            widened.append(k)
    net.load_state_dict(state, strict=True)
    return f"{os.path.basename(path)} ({', '.join(widened)} widened to {net.state_dict()[widened[0]].shape[1]} input channels)" if widened else path


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
    ap.add_argument("--device", default="auto",
                    help="where the network trains: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for the network's forward passes (CUDA only; ignored on the CPU)")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes that generate the phantoms and draw the crops (the same data whatever the count)")
    ap.add_argument("--interactive", action="store_true", help="train the DeepEdit-style model on simulated clicks")
    ap.add_argument("--init", default=str(REPO_ROOT / "model" / "pretrained_dints_pancreas_cpu.pt"),
                    help="interactive: the automatic model's weights to start from ('' for scratch)")
    ap.add_argument("--no-click-prob", type=float, default=0.3, help="interactive: crops trained without clicks")
    ap.add_argument("--initial-clicks", type=int, default=2, help="interactive: at most this many clicks per class from the label")
    ap.add_argument("--click-rounds", type=int, default=2, help="interactive: at most this many rounds of error clicks")
    ap.add_argument("--deepest-prob", type=float, default=0.0,
                    help="interactive: share of error rounds clicked where the robot user would click")
    ap.add_argument("--focus-weight", type=float, default=0.0,
                    help="interactive: weight of the extra cross-entropy over the error regions the error clicks were put in")
    args = ap.parse_args(argv)

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        ap.error(str(exc))
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    profile, task, network = get_profile("cpu"), get_task(args.task), normalise_network(args.network)
    spacing = task.spacing_for(profile.name)
    if args.interactive and network != "dints":
        ap.error("--interactive trains a DiNTS network")
    stem = "deepedit" if args.interactive else network
    out = args.out or str(REPO_ROOT / "model" / profile.pretrained_file(stem, task.name))
    roi = (args.crop,) * 3
    arch = load_arch_code(args.arch) if network == "dints" else None
    in_channels = 1 + task.num_classes if args.interactive else 1
    net = build_network(network, task.num_classes, arch, profile.channel_mul, in_channels)
    clicks = None
    if args.interactive:
        if args.init:
            print(f"start: {expand_from(net, args.init)}")
        clicks = ClickSimulation(task.num_classes, spacing, no_click_prob=args.no_click_prob, max_initial=args.initial_clicks,
                                 max_rounds=args.click_rounds, deepest_prob=args.deepest_prob, seed=args.seed,
                                 focus_weight=args.focus_weight)
    print(f"network: {arch.describe() + f', channel_mul {profile.channel_mul}' if arch else network}, "
          f"{count_parameters(net) / 1e6:.2f} M parameters; task {task.name} {dict(task.labels)}")

    t0 = time.time()
    train = prepare_phantoms(task, seed_range(TRAIN_SEED_BASE, args.train_cases), spacing, roi,
                             workers=args.workers)
    val = prepare_phantoms(task, seed_range(VAL_SEED_BASE, args.val_cases), spacing, roi, crop_masks=False,
                           workers=args.workers)
    amp = args.amp and device.type == "cuda"
    print(f"data ready in {time.time() - t0:.0f}s; training on {device}{' (bf16 autocast)' if amp else ''}", flush=True)

    def publish(model, dice, step):
        meta = {
            "profile": "cpu", "channel_mul": profile.channel_mul, "spacing": list(spacing), "task": task.name,
            "network": network, "num_classes": task.num_classes, "labels": dict(task.labels),
            "in_channels": in_channels, "interactive": bool(args.interactive),
            "trained_on": f"phantoms, seeds {seed_span(TRAIN_SEED_BASE, args.train_cases)}",
            "step": step, "validation_dice": dice,
        }
        save_checkpoint(model, arch, out, meta=meta, half=True)
        print(f"  saved {out} ({os.path.getsize(out) / 1e6:.1f} MB)", flush=True)

    result = fit(net, task, train, val, crop=args.crop, batch=args.batch, minutes=args.minutes, max_steps=args.max_steps,
                 lr=args.lr, val_every=args.val_every, clicks=clicks, on_best=None if args.interactive else publish,
                 log=lambda m: print(m, flush=True), device=device, amp=args.amp, workers=args.workers)
    if args.interactive:
        publish(net, result.history[-1] if result.history else {}, result.steps)
    print(f"done: {result.steps} steps in {result.minutes:.1f} min; best validation Dice {result.best_dice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
