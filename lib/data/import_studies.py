"""Bring real CT into the app: a MONAI Label studies folder plus a 5-fold datalist.

    python -m lib.data.import_studies /data/Task07_Pancreas studies/
    python -m lib.data.import_studies /data/my_cts studies/ --labels /data/my_masks --link

Sources: the MSD ``Task07_Pancreas`` folder (recognised by ``dataset.json`` + ``imagesTr``/``labelsTr``;
its ``imagesTs`` cases come in unlabelled), or any folder of NIfTI (.nii, .nii.gz) / NRRD (.nrrd) images
whose labels sit in ``labels/final/``, ``labels/`` or ``--labels DIR`` under the same file name stem.
Destination: images at the top level, labels in ``labels/final/`` (what MONAI Label's local datastore
reads), and ``datalist.json`` in the layout of the model-zoo ``pancreas_ct_dints_segmentation`` bundle
(``training`` items carry a ``fold``; ``validation``; ``testing``), paths relative to the datalist.

macOS ``._*`` companions and hidden files are ignored. A label whose shape differs from its image is
reported by name and that case is not imported (exit status 1); argument errors exit with 2. Every file
is written atomically, so an interrupted import never leaves half a file behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib import atomic

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


class ImportFailure(Exception):
    """A problem with the input as a whole (nothing is imported)."""


@dataclass
class Case:
    stem: str
    image: Path
    label: Path | None = None
    image_name: str = ""  # file names in the destination
    label_name: str | None = None


def split_name(name: str) -> tuple[str, str] | None:
    """(stem, suffix) of an image file name, or None for anything that is not a volume we read."""
    if name.startswith("."):  # hidden files and macOS "._" AppleDouble companions
        return None
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return None


def scan_folder(folder: Path) -> dict[str, Path]:
    """{stem: path} of the volumes directly inside ``folder``; two files with one stem is an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        parts = split_name(p.name)
        if parts is None or not p.is_file():
            continue
        if parts[0] in found:
            raise ImportFailure(f"two files named '{parts[0]}' in {folder}: {found[parts[0]].name} and {p.name}")
        found[parts[0]] = p
    return found


def is_msd(src: Path) -> bool:
    return (src / "dataset.json").is_file() and (src / "imagesTr").is_dir() and (src / "labelsTr").is_dir()


def msd_cases(src: Path) -> tuple[list[Case], list[str]]:
    """Cases listed by an MSD ``dataset.json`` (training with labels, test without)."""
    try:
        meta = json.loads((src / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailure(f"cannot read {src / 'dataset.json'}: {exc}") from exc
    cases, problems = [], []

    def resolve(rel) -> Path:
        return Path(os.path.normpath(src / str(rel)))

    entries = [(e.get("image"), e.get("label")) for e in meta.get("training", []) if isinstance(e, dict)]
    entries += [(e if isinstance(e, str) else e.get("image"), None) for e in meta.get("test", [])]
    if not entries:
        raise ImportFailure(f"{src / 'dataset.json'} lists no training or test cases")
    for image, label in entries:
        if not image:
            continue
        img = resolve(image)
        parts = split_name(img.name)
        if parts is None:
            problems.append(f"{image}: not a NIfTI/NRRD file name")
            continue
        if not img.is_file():
            problems.append(f"{parts[0]}: image {image} listed in dataset.json does not exist")
            continue
        lab = resolve(label) if label else None
        if lab is not None and not lab.is_file():
            problems.append(f"{parts[0]}: label {label} listed in dataset.json does not exist")
            continue
        cases.append(Case(parts[0], img, lab))
    return cases, problems


def folder_cases(src: Path, labels_dir: Path | None) -> tuple[list[Case], list[str]]:
    images = scan_folder(src)
    if not images:
        raise ImportFailure(f"no NIfTI (.nii, .nii.gz) or NRRD (.nrrd) images in {src}")
    if labels_dir is None:
        for candidate in (src / "labels" / "final", src / "labels"):
            if candidate.is_dir():
                labels_dir = candidate
                break
    labels = scan_folder(labels_dir) if labels_dir is not None else {}
    problems = [f"{stem}: label {p.name} has no image of that name in {src}" for stem, p in labels.items()
                if stem not in images]
    return [Case(stem, path, labels.get(stem)) for stem, path in images.items()], problems


def spatial_shape(path: Path) -> tuple[int, ...]:
    """The volume's shape from its header alone (trailing singleton dimensions dropped)."""
    lower = path.name.lower()
    if lower.endswith(".nrrd"):
        import nrrd

        shape = [int(s) for s in nrrd.read_header(str(path))["sizes"]]
    else:
        import nibabel as nib

        shape = [int(s) for s in nib.load(str(path)).header.get_data_shape()]
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return tuple(shape)


def check_case(case: Case) -> str | None:
    """Why the case cannot be imported, or None."""
    try:
        ishape = spatial_shape(case.image)
    except Exception as exc:  # unreadable header: report, never a traceback
        return f"{case.stem}: cannot read image header of {case.image.name}: {exc}"
    if len(ishape) != 3:
        return f"{case.stem}: image {case.image.name} is {len(ishape)}-D {ishape}, not a 3-D volume"
    if case.label is not None:
        try:
            lshape = spatial_shape(case.label)
        except Exception as exc:
            return f"{case.stem}: cannot read label header of {case.label.name}: {exc}"
        if lshape != ishape:
            return f"{case.stem}: label shape {lshape} differs from image shape {ishape} ({case.label.name})"
    return None


def assign_folds(stems: list[str], folds: int, seed: int) -> dict[str, int]:
    """Deterministic, balanced fold per case: sorted stems, seeded permutation, round robin."""
    order = sorted(stems)
    perm = np.random.default_rng(seed).permutation(len(order))
    return {order[j]: k % folds for k, j in enumerate(perm)}


def relative(path: Path, base: Path) -> str:
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()
    return rel if rel.startswith(".") else f"./{rel}"


def build_datalist(imported: list[Case], dst: Path, datalist: Path, folds: int, seed: int,
                   validation_fraction: float) -> dict:
    labelled = sorted((c for c in imported if c.label is not None), key=lambda c: c.stem)
    base = datalist.parent
    n_val = int(round(validation_fraction * len(labelled)))
    perm = np.random.default_rng(seed + 1).permutation(len(labelled))
    held_out = {labelled[i].stem for i in perm[:n_val]}
    train = [c for c in labelled if c.stem not in held_out]
    fold_of = assign_folds([c.stem for c in train], folds, seed)

    def item(c: Case) -> dict:
        return {"image": relative(dst / c.image_name, base), "label": relative(dst / "labels" / "final" / c.label_name, base)}

    return {
        "description": "Pancreas and pancreatic tumour CT (imported by dints-label lib/data/import_studies.py)",
        "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
        "modality": {"0": "CT"},
        "num_folds": folds,
        "seed": seed,
        "num_training": len(train),
        "num_validation": len(held_out),
        "num_testing": len(imported) - len(labelled),
        "training": [{**item(c), "fold": fold_of[c.stem]} for c in train],
        "validation": [item(c) for c in labelled if c.stem in held_out],
        "testing": [{"image": relative(dst / c.image_name, base)} for c in sorted(imported, key=lambda c: c.stem)
                    if c.label is None],
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m lib.data.import_studies",
        description="Import an MSD Task07_Pancreas folder, or a folder of NIfTI/NRRD CTs with optional labels, into a "
                    "MONAI Label studies folder (labels in labels/final/) and write a 5-fold datalist.json.",
    )
    ap.add_argument("src", help="MSD Task07_Pancreas folder, or a folder of .nii/.nii.gz/.nrrd images")
    ap.add_argument("dst", help="studies folder to create or add to")
    ap.add_argument("--labels", default=None,
                    help="folder of label volumes matched to images by file name stem (default: SRC/labels/final or "
                         "SRC/labels when present; ignored for an MSD folder)")
    ap.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    ap.add_argument("--link", action="store_true", help="symlink the files instead of copying them")
    ap.add_argument("--datalist", default=None, help="where to write the datalist (default DST/datalist.json)")
    ap.add_argument("--validation-fraction", type=float, default=0.0,
                    help="fraction of labelled cases held out as 'validation' (no fold); default 0: every labelled "
                         "case is in 'training' with a fold")
    ap.add_argument("--force", action="store_true", help="replace files of the same name already in DST")
    ap.add_argument("--quiet", action="store_true", help="print only the summary and problems")
    args = ap.parse_args(argv)
    if args.folds < 1:
        ap.error(f"--folds must be at least 1 (got {args.folds})")
    if not 0.0 <= args.validation_fraction < 1.0:
        ap.error(f"--validation-fraction must be in [0, 1) (got {args.validation_fraction})")
    src = Path(args.src)
    if not src.is_dir():
        ap.error(f"source folder {src} does not exist" if not src.exists() else f"source {src} is not a folder")
    if args.labels is not None and not Path(args.labels).is_dir():
        ap.error(f"--labels folder {args.labels} does not exist")
    if Path(args.dst).exists() and not Path(args.dst).is_dir():
        ap.error(f"destination {args.dst} exists and is not a folder")
    if Path(args.dst).resolve() == src.resolve():
        ap.error("destination must differ from the source folder")
    return args


def run(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    datalist = Path(args.datalist) if args.datalist else dst / "datalist.json"
    if is_msd(src):
        cases, problems = msd_cases(src)
        kind = "MSD Task07 folder"
    else:
        cases, problems = folder_cases(src, Path(args.labels) if args.labels else None)
        kind = "folder"
    good = []
    for case in cases:
        why = check_case(case)
        if why:
            problems.append(why)
        else:
            case.image_name = f"{case.stem}{split_name(case.image.name)[1]}"
            case.label_name = f"{case.stem}{split_name(case.label.name)[1]}" if case.label else None
            good.append(case)
    targets = [dst / c.image_name for c in good] + [dst / "labels" / "final" / c.label_name for c in good if c.label]
    clash = [t for t in targets if os.path.lexists(t)]
    if clash and not args.force:
        names = ", ".join(str(t.relative_to(dst)) for t in clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise ImportFailure(f"{len(clash)} file(s) already in {dst} ({names}); pass --force to replace them")
    if not good:
        raise ImportFailure("nothing to import:\n  " + "\n  ".join(problems) if problems else "nothing to import")

    put = atomic.symlink if args.link else atomic.copy_file
    for i, c in enumerate(good):
        put(c.image, dst / c.image_name)
        if c.label is not None:
            put(c.label, dst / "labels" / "final" / c.label_name)
        if not args.quiet:
            print(f"[{i + 1}/{len(good)}] {c.image_name}{' + label' if c.label else ''}", flush=True)
    data = build_datalist(good, dst, datalist, args.folds, args.seed, args.validation_fraction)
    atomic.write_json(datalist, data)
    n_lab = sum(c.label is not None for c in good)
    print(f"imported {len(good)} studies ({n_lab} labelled) from {kind} {src} into {dst} "
          f"({'symlinks' if args.link else 'copies'}); datalist {datalist}: {data['num_training']} training in "
          f"{args.folds} folds, {data['num_validation']} validation, {data['num_testing']} testing")
    for p in problems:
        print(f"not imported: {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ImportFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
