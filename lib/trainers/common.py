"""Pieces shared by the ``dints_search`` and ``dints_pancreas`` train tasks.

* request parameters with documented defaults (``Param``) and their parsing;
* the datalist of every image with a ``final`` label, and a train/validation split that is stable across
  runs (keyed by image id, persisted in the model folder; new labels go to training);
* data loaders built from the shared transforms of ``lib.transforms.train``;
* sliding-window validation with per-class Dice (each class checked for NaN on its own);
* progress/stat files (read by ``GET /info``), TensorBoard events and the per-epoch log line;
* multi-process (DDP) launch on one machine: ``gloo`` on CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

CLASS_NAMES = ("pancreas", "tumor")
SPLIT_FILE = "dints_pancreas_split.json"


# ---- request parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: str  # int | float | bool | str | int3 | floats
    doc: str


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "y", "on")


def parse_value(p: Param, v: Any) -> Any:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return p.default
    if p.kind == "int":
        return int(float(v))
    if p.kind == "float":
        return float(v)
    if p.kind == "bool":
        return _to_bool(v)
    if p.kind == "int3":
        parts = list(v) if isinstance(v, (list, tuple)) else [x for x in str(v).replace("x", ",").split(",") if x.strip()]
        parts = [int(float(x)) for x in parts]
        return tuple(parts * 3 if len(parts) == 1 else parts)
    if p.kind == "floats":
        parts = list(v) if isinstance(v, (list, tuple)) else [x for x in str(v).split(",") if x.strip()]
        return tuple(float(x) for x in parts)
    return str(v)


def parse_request(params: Sequence[Param], request: dict) -> dict:
    """Values from the request (strings from Slicer, JSON types from other clients), defaults otherwise."""
    out = {}
    for p in params:
        try:
            out[p.name] = parse_value(p, request.get(p.name))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"request parameter '{p.name}': cannot read {request.get(p.name)!r} as {p.kind} ({exc})") from None
    return out


def config_defaults(params: Sequence[Param]) -> dict:
    """What ``/info`` shows as the trainer's config (Slicer shows these as editable options)."""
    out = {}
    for p in params:
        v = p.default
        out[p.name] = list(v) if isinstance(v, tuple) else v
    return out


def params_markdown(params: Sequence[Param]) -> str:
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for p in params:
        d = ",".join(map(str, p.default)) if isinstance(p.default, tuple) else p.default
        rows.append(f"| `{p.name}` | `{d}` | {p.doc} |")
    return "\n".join(rows)


COMMON_PARAMS: tuple[Param, ...] = (
    Param("device", "auto", "str", "`auto` (CUDA when available), `cpu`, `cuda`"),
    Param("multi_gpu", False, "bool", "data-parallel training in several processes (DDP; `gloo` on CPU, `nccl` on CUDA)"),
    Param("gpus", "all", "str", "MONAI Label's GPU list (`all` or `0,1`); on CUDA the process count defaults to it"),
    Param("num_processes", 0, "int", "processes for `multi_gpu` (0: the number of GPUs, or 2 on CPU)"),
    Param("num_threads", 0, "int", "torch CPU threads per process (0: CPU cores / processes)"),
    Param("amp", True, "bool", "mixed precision (CUDA only; ignored on CPU)"),
    Param("seed", 0, "int", "random seed (network initialisation, crops, augmentation)"),
    Param("num_workers", 0, "int", "data-loader worker processes per training process"),
    Param("val_split", 0.2, "float", "fraction of labelled images held out for validation when the split is first made"),
    Param("val_ids", "", "str", "comma-separated image ids: fix the validation set to exactly these (persisted)"),
    Param("reset_split", False, "bool", "forget the persisted split and draw it again from the image ids"),
    Param("flip_prob", 0.0, "float", "probability of each random axis flip (0 keeps left/right anatomy cues)"),
)


# ---- datalist and stable split -----------------------------------------------------------------------
def labelled_datalist(datastore, labels: dict[str, int] | None = None) -> tuple[list[dict], list[dict]]:
    """``{"id", "image", "label"}`` for every image with a usable ``final`` label, sorted by id, and the
    skipped ones as ``{"id", "reason"}``: a label that cannot be read, is off its image's grid or holds
    values that are not label ids (e.g. written into the folder by hand) is left out, not fatal."""
    from lib.datastore.label_check import check_label
    from lib.errors import InputError

    items, skipped = [], []
    for image_id in sorted(datastore.get_labeled_images()):
        image = datastore.get_image_uri(image_id)
        label = datastore.get_label_uri(image_id, "final")
        if not (image and label and os.path.exists(image) and os.path.exists(label)):
            skipped.append({"id": image_id, "reason": "image or label file missing"})
            continue
        if labels is not None:
            try:
                check_label(label, image, labels)
            except InputError as exc:
                skipped.append({"id": image_id, "reason": exc.message})
                continue
        items.append({"id": image_id, "image": image, "label": label})
    for s in skipped:
        logger.warning(f"training skips '{s['id']}': {s['reason']}")
    return items, skipped


def id_hash(image_id: str) -> float:
    """A number in [0, 1) fixed by the image id alone (not by the order or the number of images)."""
    return int(hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def stable_split(ids: Sequence[str], split_path: str | os.PathLike, val_split: float = 0.2,
                 val_ids: Sequence[str] | None = None, reset: bool = False) -> tuple[list[str], list[str], dict]:
    """Train/validation split that survives retraining.

    The first time, an image goes to validation when the hash of its id falls below ``val_split`` (at least
    one validation image once there are two labelled images). Afterwards every image keeps its side;
    images labelled since go to training. ``val_ids`` fixes the validation set explicitly (persisted, and
    marked ``fixed``); ``reset`` draws the split again. The result is written to ``split_path``.
    """
    ids = sorted(set(ids))
    state = None if reset else read_json(split_path)
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
    write_json_atomic(info, split_path)
    return train, val, info


def halves_by_hash(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The search's two halves (weights / architecture), fixed by the image ids."""
    ordered = sorted(items, key=lambda d: id_hash(d["id"] + "#search"))
    half = len(ordered) // 2
    return ordered[:half], ordered[half:]


# ---- distributed -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_world(cfg: dict) -> tuple[str, int]:
    """(device type, number of processes) for the request."""
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    device = "cuda" if device.startswith("cuda") else "cpu"
    n = 1
    if cfg["multi_gpu"]:
        n = cfg["num_processes"]
        if n <= 0:
            if device == "cuda":
                gpus = cfg.get("gpus", "all")
                n = torch.cuda.device_count() if gpus in ("", "all") else len([g for g in gpus.split(",") if g.strip()])
            else:
                n = 2
        if device == "cuda":
            n = min(n, torch.cuda.device_count())
    return device, max(1, n)


def launch(worker: Callable, world_size: int, cfg: dict) -> None:
    """Run ``worker(rank, world_size, cfg)``: in this process, or in ``world_size`` spawned processes."""
    if world_size == 1:
        worker(0, 1, cfg)
        return
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    torch.multiprocessing.spawn(worker, args=(world_size, cfg), nprocs=world_size, join=True)


def setup_process(rank: int, world_size: int, cfg: dict) -> torch.device:
    threads = cfg["num_threads"] or max(1, (os.cpu_count() or 1) // world_size)
    torch.set_num_threads(threads)
    if cfg["device_type"] == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device(f"cuda:{rank}")
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if cfg["device_type"] == "cuda" else "gloo", rank=rank,
                                world_size=world_size)
    return device


def cleanup_process(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def run_rank(task: str, body: Callable, rank: int, world_size: int, cfg: dict) -> None:
    """One rank of a task: set up the process, run ``body(rank, world_size, cfg, device, progress)``, and
    record a failure in the stats file (read by ``GET /info``) before re-raising it."""
    device = setup_process(rank, world_size, cfg)
    progress = Progress(task, cfg["stats_path"], cfg["log_dir"], rank == 0, cfg["stats_base"])
    try:
        body(rank, world_size, cfg, device, progress)
    except BaseException as exc:
        progress.close("ERROR", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        cleanup_process(world_size)


def partition(items: Sequence, rank: int, world_size: int, even: bool = True) -> list:
    """Every rank gets the same number of items (repeating some when ``even``), like ``partition_dataset``."""
    items = list(items)
    if world_size == 1 or not items:
        return items
    if even:
        per = -(-len(items) // world_size)
        padded = (items * (world_size * per // len(items) + 1))[: world_size * per]
        return padded[rank::world_size]
    return items[rank::world_size]


def broadcast_module(module: torch.nn.Module, world_size: int) -> None:
    if world_size > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Sequence[torch.nn.Parameter], world_size: int) -> None:
    if world_size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size


def all_sum(values: Sequence[float], device, world_size: int) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


# ---- data ----------------------------------------------------------------------------------------------
def train_loader(items: list[dict], spacing, crop, num_samples: int, batch_size: int, flip_prob: float,
                 num_workers: int, seed: int):
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose

    from lib.transforms.train import augmentation, preprocessing

    transform = Compose(preprocessing(spacing, crop) + augmentation(crop, num_samples=num_samples, flip_prob=flip_prob))
    transform.set_random_state(seed=seed)
    ds = CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=None, progress=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def val_loader(items: list[dict], spacing, num_workers: int = 0):
    from monai.data import CacheDataset, DataLoader

    from lib.transforms.train import val_transforms

    ds = CacheDataset(items, transform=val_transforms(spacing), cache_rate=1.0, num_workers=None, progress=False)
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=num_workers)


def autocast(device: torch.device, amp: bool):
    import contextlib

    if amp and device.type == "cuda":
        return torch.autocast("cuda")
    return contextlib.nullcontext()


@torch.no_grad()
def validate(net: torch.nn.Module, loader, roi, sw_batch_size: int, overlap: float, device: torch.device,
             amp: bool, world_size: int) -> dict:
    """Sliding-window Dice per class over this rank's validation images, summed over ranks.

    A class absent from both prediction and reference of an image gives no evidence for that class and is
    skipped for that class only (the reference implementation tested class 0's NaN for every class).
    """
    from monai.inferers import sliding_window_inference

    from lib.metrics import dice_per_class

    module = net.module if hasattr(net, "module") else net
    was_training = module.training
    module.eval()
    sums = [0.0] * len(CLASS_NAMES)
    counts = [0.0] * len(CLASS_NAMES)
    for batch in loader:
        image = batch["image"].to(device)
        with autocast(device, amp):
            logits = sliding_window_inference(image, roi, sw_batch_size, module, overlap=overlap, mode="gaussian")
        pred = logits.float().argmax(1)[0].cpu().numpy()
        truth = np.asarray(batch["label"][0, 0].cpu().numpy()).astype(np.int64)
        for c, (name, value) in enumerate(dice_per_class(pred, truth).items()):
            if value == value:  # not NaN, checked for this class
                sums[c] += value
                counts[c] += 1
    totals = all_sum(sums + counts, device, world_size)
    sums, counts = totals[: len(CLASS_NAMES)], totals[len(CLASS_NAMES):]
    per_class = {name: (sums[c] / counts[c] if counts[c] else None) for c, name in enumerate(CLASS_NAMES)}
    present = [v for v in per_class.values() if v is not None]
    module.train(was_training)
    return {"dice": per_class, "mean_dice": float(np.mean(present)) if present else None, "images": int(max(counts or [0]))}


# ---- progress, stats, logs ---------------------------------------------------------------------------------
class Progress:
    """The stats file ``GET /info`` shows (``train_stats``), the per-epoch log line and TensorBoard events."""

    def __init__(self, task: str, stats_path: str, log_dir: str | None, enabled: bool, base: dict):
        self.task, self.stats_path, self.enabled = task, stats_path, enabled
        self.state = dict(base)
        self.state.update({"task": task, "status": "RUNNING", "pid": os.getpid(), "start_ts": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "epoch": 0, "history": []})
        self.writer = None
        if enabled and log_dir:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir)
            self.state["tensorboard"] = log_dir
        self.flush()

    def update(self, **kw) -> None:
        self.state.update(kw)
        self.flush()

    def epoch(self, epoch: int, total: int, record: dict, seconds: float) -> None:
        if not self.enabled:
            return
        record = {"epoch": epoch, "seconds": round(seconds, 2), **record}
        self.state["history"].append(record)
        self.state.update({"epoch": epoch, "total_epochs": total, "last": record})
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and v == v and k != "epoch":
                    self.writer.add_scalar(f"{self.task}/{k}", v, epoch)
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, (int, float)) and vv == vv:
                            self.writer.add_scalar(f"{self.task}/{k}_{kk}", vv, epoch)
            self.writer.flush()
        parts = []
        for k, v in record.items():
            if k == "epoch":
                continue
            if isinstance(v, float):
                parts.append(f"{k} {v:.4f}")
            elif isinstance(v, dict):
                parts.append(f"{k} " + " ".join(f"{kk}={vv:.4f}" if isinstance(vv, float) else f"{kk}={vv}" for kk, vv in v.items()))
            else:
                parts.append(f"{k} {v}")
        print(f"[{self.task}] epoch {epoch}/{total}: " + ", ".join(parts), flush=True)
        self.flush()

    def flush(self) -> None:
        if self.enabled:
            write_json_atomic(self.state, self.stats_path)

    def close(self, status: str, **kw) -> None:
        if not self.enabled:
            return
        self.state.update(kw)
        self.state.update({"status": status, "end_ts": time.strftime("%Y-%m-%d %H:%M:%S")})
        self.flush()
        if self.writer:
            self.writer.close()


def read_stats(path: str) -> dict:
    """The stats file, with ``status`` STOPPED when the process that wrote RUNNING is gone."""
    stats = read_json(path, {}) or {}
    if stats.get("status") == "RUNNING" and stats.get("pid"):
        try:
            import psutil

            if not psutil.pid_exists(int(stats["pid"])):
                stats["status"] = "STOPPED"
        except Exception:  # pragma: no cover - psutil missing or pid unreadable
            pass
    return stats
