"""Write a folder of synthetic CT phantoms: a MONAI Label studies folder or an MSD Task07 look-alike.

    python -m lib.data.make_phantoms --out sample-datastore --count 12 --labelled 4 --seed 1000
    python -m lib.data.make_phantoms --out /tmp/Task07_Pancreas --count 20 --labelled 15 --layout msd
    python -m lib.data.make_phantoms --out spleen-studies --count 12 --labelled 4 --seed 1000 --task spleen

Case i uses seed ``--seed + i``, so any case can be regenerated alone with ``make_phantom(seed, preset)``.
Every file is written atomically; an existing non-empty output folder is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lib import atomic
from lib.data.phantom import PRESETS, make_phantom, save_phantom

LAYOUTS = ("monailabel", "msd")


def case_paths(out: Path, layout: str, index: int, labelled: bool) -> tuple[Path, Path | None]:
    """Image and label path of case ``index`` (0-based) in the given layout."""
    if layout == "monailabel":
        name = f"phantom_{index:03d}.nii.gz"
        return out / name, (out / "labels" / "final" / name) if labelled else None
    name = f"pancreas_{index + 1:03d}.nii.gz"
    if labelled:
        return out / "imagesTr" / name, out / "labelsTr" / name
    return out / "imagesTs" / name, None


def msd_dataset_json(count: int, labelled: int, seed: int, preset: str, task: str = "pancreas") -> dict:
    """The MSD ``dataset.json`` (Task07_Pancreas / Task09_Spleen keys) describing the cases written by this tool."""
    training = [{"image": f"./imagesTr/pancreas_{i + 1:03d}.nii.gz", "label": f"./labelsTr/pancreas_{i + 1:03d}.nii.gz"}
                for i in range(labelled)]
    test = [f"./imagesTs/pancreas_{i + 1:03d}.nii.gz" for i in range(labelled, count)]
    spleen = task == "spleen"
    return {
        "name": "Spleen" if spleen else "Pancreas",
        "description": f"Synthetic {'spleen' if spleen else 'pancreas and pancreatic tumour'} CT phantoms (dints-label "
                       f"lib/data/phantom.py, preset '{preset}', seeds {seed}..{seed + count - 1})",
        "reference": "dints-label phantom generator",
        "licence": "see the dints-label repository",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"} if spleen else {"0": "background", "1": "pancreas", "2": "cancer"},
        "numTraining": labelled,
        "numTest": count - labelled,
        "training": training,
        "test": test,
    }


def _remove_previous(out: Path) -> None:
    """With --force: remove what an earlier run of this tool wrote (and nothing else)."""
    patterns = ["phantom_*.nii.gz", "labels/final/phantom_*.nii.gz", "imagesTr/pancreas_*.nii.gz",
                "labelsTr/pancreas_*.nii.gz", "imagesTs/pancreas_*.nii.gz", "dataset.json"]
    for pattern in patterns:
        for p in out.glob(pattern):
            if p.is_file() or p.is_symlink():
                p.unlink()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m lib.data.make_phantoms",
        description="Generate synthetic abdominal CT phantoms (labels of --task: pancreas = 1, tumour = 2; or spleen = 1) "
                    "into a MONAI Label studies folder or an MSD Task07_Pancreas-style folder.",
    )
    ap.add_argument("--out", required=True, help="output folder (created; must be empty or absent unless --force)")
    ap.add_argument("--count", type=int, required=True, help="number of phantoms to write (>= 1)")
    ap.add_argument("--labelled", type=int, default=0,
                    help="how many of them (the first ones) get a label file (0..count; default 0)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i (default 0)")
    ap.add_argument("--preset", default="sample", choices=sorted(PRESETS),
                    help="phantom size preset: sample (compact), train (compact, wider range), realistic (512x512)")
    ap.add_argument("--layout", default="monailabel", choices=LAYOUTS,
                    help="monailabel: DIR/phantom_000.nii.gz + DIR/labels/final/...; msd: imagesTr/labelsTr/imagesTs "
                         "+ dataset.json (default monailabel)")
    ap.add_argument("--task", default="pancreas", choices=["pancreas", "spleen"],
                    help="which label the labelled cases get (lib/task.py; default pancreas)")
    ap.add_argument("--force", action="store_true",
                    help="write into a non-empty output folder, replacing files an earlier run of this tool wrote")
    ap.add_argument("--quiet", action="store_true", help="no progress line per case")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error(f"--count must be at least 1 (got {args.count})")
    if not 0 <= args.labelled <= args.count:
        ap.error(f"--labelled must be between 0 and --count ({args.count}), got {args.labelled}")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0 (got {args.seed})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        ap.error(f"output folder {out} is not empty; pass --force to write into it (earlier phantoms are replaced)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.force:
            _remove_previous(out)
        t_all = time.time()
        for i in range(args.count):
            seed = args.seed + i
            labelled = i < args.labelled
            image_path, label_path = case_paths(out, args.layout, i, labelled)
            t0 = time.time()
            ph = make_phantom(seed, preset=args.preset)
            save_phantom(ph, image_path, label_path, task=args.task)
            if not args.quiet:
                inf = ph.info
                sp = "x".join(f"{s:.2f}" for s in inf["spacing"])
                tumour = f"tumour {inf['tumour_ml']:.1f} ml ({inf['tumour_site']})" if inf["has_tumour"] else "no tumour"
                tumour += f", spleen {inf['spleen_ml']:.1f} ml"
                print(f"[{i + 1}/{args.count}] {image_path.relative_to(out)} seed {seed} "
                      f"{'x'.join(map(str, inf['shape']))} @ {sp} mm {inf['orientation']}, pancreas {inf['pancreas_ml']:.1f} ml, "
                      f"{tumour}{', labelled' if labelled else ''} ({time.time() - t0:.1f} s)", flush=True)
        described = msd_dataset_json(args.count, args.labelled, args.seed, args.preset, args.task)
        if args.layout != "msd":  # a studies folder: what its labels mean (the app refuses to serve another task on it)
            described = {k: described[k] for k in ("name", "description", "labels")}
        atomic.write_json(out / "dataset.json", described)
    except OSError as exc:
        print(f"error: cannot write to {out}: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {args.count} phantoms ({args.labelled} labelled) to {out} in {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
