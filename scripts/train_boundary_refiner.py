"""Fit the interactive model's boundary refiner (:mod:`lib.transforms.boundary_refine`) on generated phantoms.

    python scripts/train_boundary_refiner.py

(the shipped ``model/boundary_refiner_pancreas_cpu.pt`` came from exactly that command). Each training phantom
(seeds 7000+, which no shipped network was trained on) gets the interactive model's automatic answer, as the
server computes it (``deepedit_<task>``, refinement off); every voxel of the band around that answer's surface
is a sample, its target whether the reference calls it pancreas. A logistic regression over the refiner's 55
features (L2-penalised, full-batch L-BFGS) gives the weights; the validation phantoms (seeds 9000+) report the
pancreas and tumour Dice before and after. The file records the voxel spacings it was fitted on (the observed
range, 5 % wider), the seeds, the network's checksum and those Dice figures, and is written atomically.
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

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lib import atomic  # noqa: E402
from lib.data.phantom import make_phantom, task_label, write_volume  # noqa: E402
from lib.data.seeds import REFINER_TRAIN_SEED_BASE, VAL_SEED_BASE, seed_range, seed_span  # noqa: E402
from lib.robot_user import dice  # noqa: E402
from lib.transforms.boundary_refine import BoundaryRefiner, band_samples, ras_view  # noqa: E402



def automatic_answers(task_name: str, model_dir: str, conf: dict, seeds, preset: str):
    """(seed, phantom, reference, automatic label, spacing, network checksum) per phantom, from the served interactive task."""
    from lib.configs.interactive import InteractiveConfig

    cfg = InteractiveConfig()
    cfg.init(f"deepedit_{task_name}", model_dir, {"profile": "cpu", **conf, "boundary_refine": "false"}, None)
    task = cfg.infer()[f"deepedit_{task_name}"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(seeds):
            t0 = time.time()
            ph = make_phantom(seed, preset=preset)
            path = os.path.join(tmp, f"phantom_{seed}.nii.gz")
            write_volume(path, ph.image, ph.affine)
            task.cache.clear()
            label, _ = task({"image": path, "result_write_to_file": False})
            spacing = nib.affines.voxel_sizes(ph.affine)
            print(f"  [{i + 1}/{len(seeds)}] phantom {seed}: automatic pancreas Dice "
                  f"{dice(label, task_label(ph, task_name), 1):.4f} ({time.time() - t0:.0f} s)", flush=True)
            yield seed, ph, task_label(ph, task_name), label, spacing, task.served.checksum()


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 200) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-penalised logistic regression (full batch, L-BFGS)."""
    X = torch.from_numpy(x).double()
    Y = torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pancreas", help="the task whose interactive model it follows (lib/task.py)")
    ap.add_argument("--model-dir", default=str(REPO_ROOT / "model"), help="the app's model folder (architecture, weights)")
    ap.add_argument("--interactive-model-file", default=None, help="the interactive weights (default: those the app serves: a published deepedit_<task>_cpu.pt, else the shipped ones)")
    ap.add_argument("--train-cases", type=int, default=16, help="training phantoms (seeds 7000...)")
    ap.add_argument("--val-cases", type=int, default=4, help="validation phantoms (seeds 9000...)")
    ap.add_argument("--preset", default="train", help="phantom preset (lib/data/phantom.py)")
    ap.add_argument("--band", type=int, default=1, help="voxels on either side of the surface the refiner decides")
    ap.add_argument("--l2", type=float, default=1e-4, help="L2 penalty of the logistic regression")
    ap.add_argument("--num-threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="default: model/boundary_refiner_<task>_cpu.pt")
    args = ap.parse_args(argv)
    if args.train_cases < 1 or args.val_cases < 0 or args.band < 1 or args.l2 < 0:
        ap.error("--train-cases >= 1, --val-cases >= 0, --band >= 1 and --l2 >= 0")
    out = Path(args.out or REPO_ROOT / "model" / f"boundary_refiner_{args.task}_cpu.pt")
    conf = {"num_threads": str(args.num_threads)} if args.num_threads else {}
    if args.interactive_model_file:
        conf["interactive_model_file"] = os.path.abspath(args.interactive_model_file)
    t0 = time.time()

    print(f"training phantoms: seeds {seed_span(REFINER_TRAIN_SEED_BASE, args.train_cases)}", flush=True)
    xs, ys, spacings, checksum = [], [], [], ""
    for seed, ph, truth, label, spacing, checksum in automatic_answers(
            args.task, args.model_dir, conf, seed_range(REFINER_TRAIN_SEED_BASE, args.train_cases), args.preset):
        x, idx = band_samples(ph.image, label, ph.affine, args.band)
        xs.append(x)
        ys.append(ras_view(truth, ph.affine)[tuple(idx.T)] == 1)
        spacings.append(np.sort(spacing))
    x, y = np.concatenate(xs), np.concatenate(ys)
    print(f"fitting on {len(y):,} band voxels ({y.mean():.1%} pancreas)", flush=True)
    w, b = fit_logistic(x, y, args.l2)
    sp = np.array(spacings)
    refiner = BoundaryRefiner(kernel=torch.from_numpy(w[:54].reshape(2, 3, 3, 3)).float(), sd_weight=float(w[54]),
                              bias=b, band=args.band, spacing_min=tuple(sp.min(0) / 1.05), spacing_max=tuple(sp.max(0) * 1.05))

    before, after = [], []
    if args.val_cases:
        print(f"validation phantoms: seeds {seed_span(VAL_SEED_BASE, args.val_cases)}", flush=True)
        for seed, ph, truth, label, spacing, _ in automatic_answers(
                args.task, args.model_dir, conf, seed_range(VAL_SEED_BASE, args.val_cases), args.preset):
            refined = label.copy()
            refiner.refine(ph.image.astype(np.float32), refined, ph.affine)
            before.append((dice(label, truth, 1), dice(label, truth, 2)))
            after.append((dice(refined, truth, 1), dice(refined, truth, 2)))
        b_, a_ = np.mean(before, 0), np.mean(after, 0)
        print(f"validation Dice pancreas {b_[0]:.4f} -> {a_[0]:.4f}, tumour {b_[1]:.4f} -> {a_[1]:.4f}", flush=True)
    meta = {"trained_on": f"phantoms ({args.preset}), seeds {seed_span(REFINER_TRAIN_SEED_BASE, args.train_cases)}",
            "network_checksum": checksum, "samples": int(len(y)), "l2": args.l2,
            "validation": {"seeds": seed_span(VAL_SEED_BASE, args.val_cases),
                           "dice_before": [float(v) for v in np.mean(before, 0)] if before else None,
                           "dice_after": [float(v) for v in np.mean(after, 0)] if after else None},
            "seconds": round(time.time() - t0, 1)}
    atomic.torch_save(refiner.state(**meta), out)
    print(f"wrote {out} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
