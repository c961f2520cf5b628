"""Multi-process (DDP) training on one machine, PyTorch's own way: ``gloo`` on CPU, ``nccl`` on CUDA.

Also the bundle's ``multi_gpu_train.yaml`` scaling of a request to N processes (:func:`scale_schedule`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from lib.trainers.progress import Progress
from lib.wait import free_port


def device_type(name: str | None) -> str:
    """``cuda`` or ``cpu`` for a requested device: ``auto`` (or None) is CUDA when torch sees a GPU, a ``cuda``
    device without one is refused (ValueError), anything else is the CPU."""
    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' asked for, but this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto")
        return "cuda"
    return "cpu"


def resolve_device(name: str | None) -> torch.device:
    """The device of a command-line option: ``auto`` (or None), ``cpu``, ``cuda`` or ``cuda:N``, by
    :func:`device_type`'s rule; a name torch does not know is refused (ValueError)."""
    key = (name or "auto").strip().lower()
    kind = device_type(key)
    if key == "auto":
        return torch.device(kind)
    try:
        return torch.device(key)
    except RuntimeError as exc:
        raise ValueError(f"unknown device '{name}': auto, cpu, cuda or cuda:N") from exc


def resolve_world(cfg: dict) -> tuple[str, int]:
    """(device type, number of processes) for the request."""
    device = device_type(cfg["device"])
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


def launch(worker: Callable, world_size: int, cfg) -> None:
    """Run ``worker(rank, world_size, cfg)``: in this process, or in ``world_size`` spawned processes."""
    if world_size == 1:
        worker(0, 1, cfg)
        return
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    torch.multiprocessing.spawn(worker, args=(world_size, cfg), nprocs=world_size, join=True)


def _setting(cfg, name: str) -> Any:
    """A run setting of the search's configuration (a dict) or of a training run's (a ``TrainConfig``)."""
    return cfg[name] if isinstance(cfg, Mapping) else getattr(cfg, name)


def setup_process(rank: int, world_size: int, cfg) -> torch.device:
    threads = _setting(cfg, "num_threads") or max(1, (os.cpu_count() or 1) // world_size)
    torch.set_num_threads(threads)
    device_type = _setting(cfg, "device_type")
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device(f"cuda:{rank}")
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank,
                                world_size=world_size)
    return device


def cleanup_process(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def run_rank(task: str, body: Callable, rank: int, world_size: int, cfg) -> None:
    """One rank of a task: set up the process, run ``body(rank, world_size, cfg, device, progress)``, and
    record a failure in the stats file (read by ``GET /info``) before re-raising it."""
    device = setup_process(rank, world_size, cfg)
    progress = Progress(task, _setting(cfg, "stats_path"), _setting(cfg, "log_dir"), rank == 0, _setting(cfg, "stats_base"))
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
