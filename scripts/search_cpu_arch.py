"""Search the ``cpu`` profile's DiNTS architecture on generated phantoms, reproducibly.

    python scripts/search_cpu_arch.py                  # -> model/dints_pancreas_cpu_arch_phantom_search.pth
    python scripts/search_cpu_arch.py --task spleen    # -> model/dints_spleen_cpu_arch_phantom_search.pth

runs the same search as ``POST /train/dints_search`` (``TopologySearch`` supernet, weights and
architecture on two disjoint halves of the training images, DiNTS's memory and topology regularisers,
``decode()``), on generated phantoms with the task's label (seeds 5000+, as the shipped weights; the sample datastore's
seeds are never used) at the task's ``cpu`` spacing (2 mm). The supernet has the shipped network's shape (4 blocks,
4 resolutions) at its width (``channel_mul`` 0.25), so the searched code drops into the profile as it is.
The settings, the wall time and the validation history are stored in the architecture file itself. The
output is named ``*_phantom_search.pth`` so that no train task picks it up by itself: ``benchmarks/models.py``
compares it with the hand-written architecture at one budget, and it replaces the shipped one only if it wins.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lib.data.seeds import TRAIN_SEED_BASE, VAL_SEED_BASE, seed_range, seed_span  # noqa: E402


def write_phantoms(folder: Path, seeds, task: str, preset: str = "train") -> list[dict]:
    from lib.data.phantom import make_phantom, save_phantom

    items = []
    for seed in seeds:
        ph = make_phantom(seed, preset=preset)
        image, label = folder / f"phantom_{seed}.nii.gz", folder / f"phantom_{seed}_label.nii.gz"
        save_phantom(ph, image, label, task=task)
        items.append({"id": f"phantom_{seed}", "image": str(image), "label": str(label)})
    return items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pancreas", help="pancreas or spleen (lib/task.py)")
    ap.add_argument("--out", default=None, help="default: model/dints_<task>_cpu_arch_phantom_search.pth")
    ap.add_argument("--train-cases", type=int, default=24, help="phantoms for the search (half weights, half architecture)")
    ap.add_argument("--val-cases", type=int, default=4, help="validation phantoms (seeds 9000...)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--warmup-epochs", type=int, default=12)
    ap.add_argument("--val-interval", type=int, default=6)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--num-crops", type=int, default=2)
    ap.add_argument("--channel-mul", type=float, default=0.25)
    ap.add_argument("--num-blocks", type=int, default=4)
    ap.add_argument("--num-depths", type=int, default=4)
    ap.add_argument("--ram-cost-factor", type=float, default=0.8)
    ap.add_argument("--lr-arch", type=float, default=0.005,
                    help="Adam learning rate of the architecture (bundle: 0.001 over 715 search epochs; a short search needs more)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    args = ap.parse_args(argv)

    from lib.task import get_task
    from lib.trainers import search_loop
    from lib.params import parse_request
    from lib.trainers.tasks import SEARCH_PARAMS

    task = get_task(args.task)
    out = args.out or str(REPO_ROOT / "model" / f"dints_{task.name}_cpu_arch_phantom_search.pth")
    request = {"epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "val_interval": args.val_interval,
               "channel_mul": args.channel_mul, "num_blocks": args.num_blocks, "num_depths": args.num_depths,
               "crop_size": args.crop, "num_crops": args.num_crops, "batch_size": 1, "ram_cost_factor": args.ram_cost_factor,
               "lr_arch": args.lr_arch,
               "val_roi_size": 96, "sw_overlap": 0.25, "seed": args.seed, "num_threads": args.threads, "device": "cpu"}
    cfg = parse_request(SEARCH_PARAMS, request)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        train = write_phantoms(Path(tmp), seed_range(TRAIN_SEED_BASE, args.train_cases), task.name)
        val = write_phantoms(Path(tmp), seed_range(VAL_SEED_BASE, args.val_cases), task.name)
        half = len(train) // 2
        cfg.update({
            "device_type": "cpu", "world_size": 1, "task": task.name, "spacing": task.spacing_for("cpu"),
            "items_w": train[:half], "items_a": train[half:], "items_val": val, "out_file": out,
            "search_params": {**{p.name: cfg[p.name] for p in SEARCH_PARAMS},
                              "data": f"{task.name} phantoms, seeds {seed_span(TRAIN_SEED_BASE, args.train_cases)} "
                                      f"(validation {seed_span(VAL_SEED_BASE, args.val_cases)})",
                              "command": "python scripts/search_cpu_arch.py " + " ".join(argv if argv is not None else sys.argv[1:])},
            "stats_path": os.path.join(tmp, "search_stats.json"), "log_dir": None, "stats_base": {},
        })
        print(f"{len(train)} search phantoms, {len(val)} validation phantoms written in {time.time() - t0:.0f}s", flush=True)
        search_loop.search_worker(0, 1, cfg)
    from lib import atomic
    from lib.networks.arch_code import safe_torch_load

    record = safe_torch_load(out)
    record["wall_seconds"] = round(time.time() - t0, 1)  # phantoms, search and validation, on this machine
    atomic.torch_save(record, out)
    print(f"search wall time {(time.time() - t0) / 60:.1f} min; architecture in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
