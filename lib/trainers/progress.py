"""What a running train task reports: the stats file ``GET /info`` shows (``train_stats``), the per-epoch
log line that ``GET /train`` shows, and TensorBoard events."""

from __future__ import annotations

import os
import time

from lib import atomic


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
            atomic.write_json(self.stats_path, self.state, indent=2)

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
    stats = atomic.read_json(path, {}) or {}
    if stats.get("status") == "RUNNING" and stats.get("pid"):
        try:
            import psutil

            if not psutil.pid_exists(int(stats["pid"])):
                stats["status"] = "STOPPED"
        except Exception:  # pragma: no cover - psutil missing or pid unreadable
            pass
    return stats
