"""The training data: every image with a usable ``final`` label, and a train/validation split that is
stable across runs (keyed by image id, persisted in the model folder; new labels go to training)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Sequence

from lib import atomic

logger = logging.getLogger(__name__)


def split_file(task: str) -> str:
    """The file (in the model folder) of a task's persisted split, shared by its models (DiNTS, UNet);
    the pancreas task keeps the name of the first release."""
    return "dints_pancreas_split.json" if task == "pancreas" else f"{task}_split.json"


def labelled_datalist(datastore, labels: dict[str, int] | None = None,
                      limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """``{"id", "image", "label"}`` for every image with a usable ``final`` label, sorted by id, and the
    skipped ones as ``{"id", "reason"}``: a label that cannot be read, is off its image's grid or holds
    values that are not label ids (e.g. written into the folder by hand) is left out, not fatal.
    ``limit``: stop once that many usable ones are found (a train request's quick check of the data)."""
    from lib.datastore.label_check import check_label
    from lib.errors import InputError

    items, skipped = [], []
    for image_id in sorted(datastore.get_labeled_images()):
        if limit is not None and len(items) >= limit:
            break
        image = datastore.get_image_uri(image_id)
        label = datastore.get_label_uri(image_id, "final")
        if not (image and label and os.path.exists(image) and os.path.exists(label)):
            problem = getattr(datastore, "label_problem", lambda _: None)(image_id)  # a PACS names the SEG and why
            skipped.append({"id": image_id, "reason": problem or "image or label file missing"})
            continue
        if labels is not None:
            try:
                checked = check_label(label, image, labels)
            except InputError as exc:
                skipped.append({"id": image_id, "reason": exc.message})
                continue
            if checked.segmentation:  # put into the folder by hand: its values mean its own segment table
                skipped.append({"id": image_id, "reason": "a 3D Slicer segmentation file, whose values are not the "
                                                          "model's ids: submit it through the server, which stores it "
                                                          "as a labelmap"})
                continue
        items.append({"id": image_id, "image": image, "label": label})
    if limit is None:
        for s in skipped:
            logger.warning(f"training skips '{s['id']}': {s['reason']}")
    return items, skipped


def id_hash(image_id: str) -> float:
    """A number in [0, 1) fixed by the image id alone (not by the order or the number of images)."""
    return int(hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def stable_split(ids: Sequence[str], split_path: str | os.PathLike, val_split: float = 0.2,
                 val_ids: Sequence[str] | None = None, reset: bool = False,
                 write: bool = True) -> tuple[list[str], list[str], dict]:
    """Train/validation split that survives retraining.

    The first time, an image goes to validation when the hash of its id falls below ``val_split`` (at least
    one validation image once there are two labelled images). Afterwards every image keeps its side;
    images labelled since go to training. ``val_ids`` fixes the validation set explicitly (persisted, and
    marked ``fixed``); ``reset`` draws the split again. The result is written to ``split_path`` (unless
    ``write`` is false: what a run would get, for checking a request before starting it).
    """
    ids = sorted(set(ids))
    state = None if reset else atomic.read_json(split_path)
    fixed = bool(state and state.get("fixed"))
    if val_ids:
        val = [i for i in ids if i in set(val_ids)]
        missing = sorted(set(val_ids) - set(ids))
        if missing:
            raise ValueError(f"val_ids {missing} have no final label in the datastore")
        fixed = True
    elif state and isinstance(state.get("validation"), list):
        known = set(state.get("validation", [])) | set(state.get("training", []))
        val = [i for i in ids if i in set(state["validation"])]
        if not val and len(ids) >= 2 and not fixed:
            # every validation image lost its label: take the new images' lowest hash, never move old ones
            new = [i for i in ids if i not in known] or ids
            val = [min(new, key=id_hash)]
    else:
        val = [i for i in ids if id_hash(i) < val_split]
        if not val and len(ids) >= 2 and val_split > 0:
            val = [min(ids, key=id_hash)]
        if len(val) == len(ids) and len(ids) >= 2:
            val = val[:-1]
    train = [i for i in ids if i not in set(val)]
    info = {"training": train, "validation": val, "fixed": fixed, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    if write:
        atomic.write_json(split_path, info, indent=2)
    return train, val, info


def halves_by_hash(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The search's two halves (weights / architecture), fixed by the image ids."""
    ordered = sorted(items, key=lambda d: id_hash(d["id"] + "#search"))
    half = len(ordered) // 2
    return ordered[:half], ordered[half:]
