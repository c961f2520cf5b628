"""bf16 inference on the CPU (``--conf backend bf16``), behind an accuracy gate.

CPUs with native bf16 (Intel AMX ``amx_bf16``, AVX-512 ``avx512_bf16`` on AMD and Intel) run 3-D convolutions in
bf16 through oneDNN, with channels-last-3d tensors, at up to about twice the fp32 speed; eager fp32 PyTorch leaves
those units idle. Lower precision can move a boundary, so before a network is served in bf16 its labels are compared
with fp32's on calibration windows (the task's preprocessing of sample images: by default the shipped sample
studies, ``--conf calibration_dir`` for a site's own): the mean foreground Dice of bf16 against fp32 must reach
:data:`GATE_DICE` on every calibration image, else the backend falls back to fp32 and says why. The verdict is
cached beside the compiled engines, keyed by the weights checksum, window, library versions and the CPU's bf16
flags, so a new model, an upgrade or another CPU measures again.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from lib import atomic
from lib.runtime.aot_package import BackendUnavailable
from lib.runtime.cpu_layouts import ChannelsLastModel
from lib.networks.factory import input_channels
from lib.runtime.engine_cache import default_engine_dir, engine_key, engine_path, library_versions

logger = logging.getLogger(__name__)

GATE_DICE = 0.99  # least label agreement (mean foreground Dice, bf16 vs fp32) on every calibration image
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_PRECISIONS = ("auto", "fp32")


def cpu_precision(value: str | None) -> str:
    """``--conf cpu_precision``: ``auto`` (bf16 where the CPU has it and the gate passes) or ``fp32``."""
    v = str(value or "auto").strip().lower()
    if v not in CPU_PRECISIONS:
        raise ValueError(f"--conf cpu_precision must be 'auto' or 'fp32', not {value!r}")
    return v


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """(model name, flags) of the CPU from ``/proc/cpuinfo`` (empty where it cannot be read). Read once: ``auto``
    asks on every request."""
    model, flags = "", ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = tuple(line.split(":", 1)[1].split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 flags (empty: bf16 would be emulated, slower than fp32)."""
    return [f for f in BF16_FLAGS if f in cpu_info()[1]]


LAYOUT_VERSION = 3  # bumped when Bf16Model's computation (its cpu_layouts included) changes: verdicts measured again


class Bf16Model(ChannelsLastModel):
    """The network in its fast CPU layouts (:mod:`lib.runtime.cpu_layouts`) under bf16 autocast; scores come back as
    fp32."""

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x).float()


def label_agreement(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean Dice over the foreground classes of two score tensors' argmax labels (classes absent from both skipped;
    1.0 when every class is absent from both)."""
    a, b = reference.argmax(1), candidate.argmax(1)
    dices = []
    for c in range(1, reference.shape[1]):
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        if total:
            dices.append(2.0 * int((x & y).sum()) / total)
    return float(sum(dices) / len(dices)) if dices else 1.0


@dataclass
class GateResult:
    passed: bool
    agreement: dict[str, float]  # calibration image -> Dice of bf16 against fp32
    reason: str = ""


def run_gate(net: nn.Module, candidate: Callable, windows: Sequence[tuple[str, torch.Tensor]]) -> GateResult:
    """Labels of ``candidate`` against ``net`` (fp32) on each calibration image's windows."""
    if not windows:
        return GateResult(False, {}, "no calibration images")
    agreement = {}
    with torch.no_grad():
        for name, batch in windows:
            agreement[name] = round(label_agreement(net(batch), candidate(batch)), 5)
    worst = min(agreement, key=agreement.get)
    if agreement[worst] < GATE_DICE:
        return GateResult(False, agreement, f"its labels agree with fp32's at Dice {agreement[worst]:.4f} on {worst} "
                                            f"(the gate is {GATE_DICE})")
    return GateResult(True, agreement)


def cached_gate(net: nn.Module, candidate: Callable, calibration, path: str | None, what: str) -> GateResult:
    """The verdict of :func:`run_gate` for ``candidate`` on the calibration images: read from ``path`` where an
    earlier start wrote it, else measured now and written there (``path`` None: measured, not kept)."""
    if path and os.path.exists(path):
        try:
            data = json.loads(open(path, encoding="utf-8").read())
            return GateResult(bool(data["passed"]), dict(data["agreement"]), str(data.get("reason", "")))
        except (OSError, ValueError, KeyError) as exc:
            logger.warning(f"{what} gate verdict {os.path.basename(path)} unreadable ({exc}); measuring again")
    result = run_gate(net, candidate, calibration.windows(input_channels(net)))
    if path:
        atomic.write_json(path, {"passed": result.passed, "agreement": result.agreement, "reason": result.reason,
                                 "gate": GATE_DICE})
    logger.info(f"{what} gate: {'passed' if result.passed else 'failed'} ({result.agreement})")
    return result


def agreement_note(result: GateResult) -> str:
    """What an answer served in bf16 says of its gate."""
    return f"bf16 label agreement with fp32 (Dice) on calibration: {min(result.agreement.values()):.4f}"


def gate_path(weights_path: str, checksum: str, opts, calibration_id: str) -> str:
    engine_dir = opts.engine_dir or default_engine_dir(weights_path)
    versions = {**library_versions(), "cpu_bf16": cpu_bf16_flags(), "calibration": calibration_id,
                "bf16_layout": LAYOUT_VERSION}
    key = engine_key(checksum, "bf16", "bf16", (opts.sw_batch_size, opts.sw_batch_size), opts.roi_size, "cpu", versions)
    return engine_path(engine_dir, weights_path, "bf16", "gate", key, ext=".json")


def build_bf16(net: nn.Module, device, opts, weights_path: str | None, checksum: str | None):
    """The bf16 model once the gate passes (cached verdict, else measured now); BackendUnavailable otherwise."""
    if str(device).startswith("cuda"):
        raise BackendUnavailable("'bf16' is the CPU path; on CUDA use 'amp', 'compile' or 'tensorrt'")
    if not cpu_bf16_flags():
        raise BackendUnavailable(f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)}): fp32 is faster")
    calibration = getattr(opts, "calibration", None)
    if calibration is None:
        raise BackendUnavailable("no calibration images to check bf16 against fp32 (--conf calibration_dir)")
    model = Bf16Model(copy.deepcopy(net).eval())  # a copy: the fp32 network the other backends share keeps its layout
    path = gate_path(weights_path, checksum, opts, calibration.identity()) if weights_path and checksum else None
    result = cached_gate(net, model, calibration, path, "bf16")
    if not result.passed:
        raise BackendUnavailable(result.reason)
    return model, "bf16", {"note": agreement_note(result)}
