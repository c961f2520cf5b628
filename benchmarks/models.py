"""Does the search pay? The searched DiNTS, the hand-written compact DiNTS and the seed bundle's UNet at ONE
training budget, for the pancreas task and for the spleen task, side by side in one run.

    python benchmarks/models.py --quick      # minutes on a 2-core CPU
    python benchmarks/models.py              # the README's figures (longer)

Every model is trained from the same initial seed by the offline fitter (:func:`lib.trainers.phantom_fit.fit`:
AdamW, linear decay, class-balanced crops, no flips) for the same number of steps on the same generated
phantoms (preset ``train``, seeds 5000+, the task's label), and scored on held-out phantoms (preset
``sample``, seeds 9500+; never used for training, validation or the sample datastore): Dice per class on the
model grid (sliding window 96^3, overlap 0.25). Also: parameters, and the CPU time of one 96^3 window
(eager, batch 1, median of ``--reps`` after a warm-up), measured in the same process.

Models per task: ``dints-searched`` (the architecture ``scripts/search_cpu_arch.py`` found for that task),
``dints-compact`` (the hand-written ``cpu`` architecture), ``unet`` (the spleen bundle's network); for the
spleen task also ``dints-transfer`` (the architecture searched on the pancreas, trained on the spleen, as the
DiNTS tutorial does). A searched architecture file that is absent is reported as skipped, not faked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks.machine import cpu_description  # noqa: E402
from benchmarks.timing import median_seconds  # noqa: E402
from lib.data.seeds import HELD_OUT_SEED_BASE, TRAIN_SEED_BASE, seed_range  # noqa: E402

MODES = {
    "quick": dict(steps=40, train_cases=8, heldout=4, crop=48, reps=2),
    "full": dict(steps=400, train_cases=16, heldout=8, crop=64, reps=3),
}
SEARCHED = {"pancreas": REPO_ROOT / "model" / "dints_pancreas_cpu_arch_phantom_search.pth",
            "spleen": REPO_ROOT / "model" / "dints_spleen_cpu_arch_phantom_search.pth"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def model_list(task: str) -> list[tuple[str, str, Path | None]]:
    """(name, network, architecture file) per model of the comparison."""
    from lib.profiles import get_profile

    compact = REPO_ROOT / "model" / get_profile("cpu").arch_file
    models = [("dints-searched", "dints", SEARCHED[task]), ("dints-compact", "dints", compact), ("unet", "unet", None)]
    if task == "spleen":
        models.append(("dints-transfer", "dints", SEARCHED["pancreas"]))
    return models


def window_seconds(net: torch.nn.Module, reps: int) -> float:
    return median_seconds(net.eval(), torch.rand(1, 1, 96, 96, 96), reps)


def run_task(task_name: str, cfg: dict, seed: int) -> list[dict]:
    from monai.utils import set_determinism

    from lib.networks.arch_code import load_arch_code
    from lib.networks.factory import build_network, count_parameters
    from lib.profiles import get_profile
    from lib.task import get_task
    from lib.trainers.phantom_fit import fit, phantom_item, prepare, validate

    task, profile = get_task(task_name), get_profile("cpu")
    spacing, roi = task.spacing_for("cpu"), (cfg["crop"],) * 3
    t0 = time.time()
    train = prepare(task, (phantom_item(s, task=task_name) for s in seed_range(TRAIN_SEED_BASE, cfg["train_cases"])),
                    spacing, roi, progress=False)
    heldout = prepare(task, (phantom_item(s, preset="sample", task=task_name)
                             for s in seed_range(HELD_OUT_SEED_BASE, cfg["heldout"])),
                      spacing, roi, crop_masks=False, progress=False)
    log(f"{task_name}: {len(train)} training and {len(heldout)} held-out phantoms ready in {time.time() - t0:.0f}s")
    rows = []
    for name, network, arch_file in model_list(task_name):
        row = {"task": task_name, "model": name, "network": network, "arch_file": str(arch_file) if arch_file else None}
        if network == "dints" and not (arch_file and arch_file.exists()):
            row["skipped"] = f"architecture file absent: {arch_file}"
            log(f"{task_name} {name}: skipped ({row['skipped']})")
            rows.append(row)
            continue
        arch = load_arch_code(arch_file) if network == "dints" else None
        set_determinism(seed=seed)
        net = build_network(network, task.num_classes, arch, profile.channel_mul)
        row.update(parameters=count_parameters(net), architecture=arch.describe() if arch else "UNet 16-256, 2 res units")
        t = time.time()
        res = fit(net, task, train, (), crop=cfg["crop"], batch=2, minutes=1e6, max_steps=cfg["steps"], lr=2e-3,
                  log=lambda _m: None)
        row["train_seconds"] = round(time.time() - t, 1)
        row["steps"] = res.steps
        dice = validate(net, heldout, roi=(96, 96, 96), overlap=0.25, class_names=task.class_names)
        row["dice"] = {k: round(float(v), 4) for k, v in dice.items()}
        row["window_seconds"] = round(window_seconds(net, cfg["reps"]), 3)
        log(f"{task_name} {name}: Dice {row['dice']}, {row['parameters'] / 1e6:.2f} M parameters, "
            f"{row['window_seconds']:.2f} s per 96^3 window, trained {row['steps']} steps in {row['train_seconds']:.0f}s")
        rows.append(row)
        del net
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| task | model | architecture | parameters | s / 96^3 window | Dice (held-out) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['task']} | {r['model']} | skipped: {r['skipped']} | | | |")
            continue
        dice = ", ".join(f"{k} {v:.3f}" for k, v in r["dice"].items())
        lines.append(f"| {r['task']} | {r['model']} | {r['architecture']} | {r['parameters'] / 1e6:.2f} M | "
                     f"{r['window_seconds']:.2f} | {dice} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small budget (minutes)")
    ap.add_argument("--tasks", nargs="+", default=["pancreas", "spleen"])
    ap.add_argument("--steps", type=int, default=None, help="training steps per model (the one budget)")
    ap.add_argument("--train-cases", type=int, default=None)
    ap.add_argument("--heldout", type=int, default=None)
    ap.add_argument("--crop", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None, help="timed 96^3 windows per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--out", default=None, help="JSON record (default benchmarks/results/models_<mode>.json)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    for key in ("steps", "train_cases", "heldout", "crop", "reps"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    cpu = cpu_description()
    log(f"mode {mode}: {cfg}; CPU {cpu}; torch {torch.__version__}")
    start = time.time()
    rows = []
    for task in args.tasks:
        rows += run_task(task, cfg, args.seed)
    table = markdown(rows)
    print(table, flush=True)
    out = Path(args.out or REPO_ROOT / "benchmarks" / "results" / f"models_{mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from lib import atomic

    atomic.write_json(out, {"mode": mode, "config": cfg, "cpu": cpu, "torch": torch.__version__, "rows": rows,
                            "table": table, "seconds": round(time.time() - start, 1),
                            "date": time.strftime("%Y-%m-%d")}, indent=2)
    log(f"done in {(time.time() - start) / 60:.1f} min; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
