"""Report the served model's Dice on held-out phantoms and its overlap with the real CT's reference mask.

    python scripts/evaluate_weights.py [--cases 20] [--model-dir model] [--conf KEY VALUE ...]

Held-out phantoms use seeds 9500+ (never trained or validated on). The real CT's reference pancreas mask
is another model's output (TotalSegmentator --fast), so its overlap is a sanity figure, not a score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from lib.data.seeds import HELD_OUT_SEED_BASE, seed_range  # noqa: E402
from lib.evaluation import evaluate_phantoms, make_infer_task, segment_file  # noqa: E402
from lib.metrics import dice, mean_ignoring_nan  # noqa: E402

REAL_CT = REPO_ROOT.parent / "shared" / "data" / "real-ct"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20, help="held-out phantoms to score")
    ap.add_argument("--preset", default="sample", help="phantom preset (sample or realistic)")
    ap.add_argument("--model-dir", default=str(REPO_ROOT / "model"))
    ap.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = ap.parse_args(argv)
    task = make_infer_task(args.model_dir, dict(args.conf))
    print(f"model: {task.model_info()}  profile: {task.profile.name}")

    t0 = time.time()
    rows = evaluate_phantoms(task, seed_range(HELD_OUT_SEED_BASE, args.cases), preset=args.preset)
    if task.task.name != "pancreas":  # e.g. --conf task spleen: Dice per label, nothing pancreas-specific
        for name in task.task.labels:
            vals = [r[name] for r in rows]
            print(f"held-out phantoms ({len(rows)}, {time.time() - t0:.0f}s): {name} Dice mean {mean_ignoring_nan(vals):.3f} "
                  f"(min {np.nanmin(vals):.3f})")
        return 0
    for r in rows:
        print(f"  seed {r['seed']}: pancreas {r['pancreas']:.3f}  tumour {r['tumor']:.3f}  (tumour present: {r['has_tumour']})")
    panc = [r["pancreas"] for r in rows]
    tum = [r["tumor"] for r in rows if r["has_tumour"]]
    fp = sum(1 for r in rows if not r["has_tumour"] and r["tumor"] == 0.0)
    print(f"held-out phantoms ({len(rows)}, {time.time() - t0:.0f}s): pancreas Dice mean {np.mean(panc):.3f} "
          f"(sd {np.std(panc):.3f}, min {np.min(panc):.3f}); tumour Dice mean {mean_ignoring_nan(tum):.3f} over "
          f"{len(tum)} cases with a tumour; {fp} of {len(rows) - len(tum)} tumour-free cases got a false tumour")

    ct = REAL_CT / "example_ct.nii.gz"
    if ct.exists():
        t0 = time.time()
        label, _ = segment_file(task, ct)
        wall = time.time() - t0
        ref = np.asarray(nib.load(str(REAL_CT / "example_ct_pancreas_reference.nii.gz")).dataobj) > 0
        print(f"real CT: {wall:.1f}s, shape {label.shape}, pancreas voxels {int((label == 1).sum())} "
              f"(reference {int(ref.sum())}), tumour voxels {int((label == 2).sum())}, "
              f"Dice(pancreas+tumour vs reference pancreas) {dice((label > 0).astype(np.uint8), ref.astype(np.uint8), 1):.3f}")
    else:
        print(f"real CT not found at {ct}: skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
