"""What a benchmark ran on: the CPU's model name and its vector/matrix flags (a speed figure names its CPU), and the
CPU's theoretical peak FLOP rate, the physical limit a network's achieved GFLOP/s is compared with."""

from __future__ import annotations

import os
import platform

SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> tuple[str, set[str], float]:
    """(model name, flags, MHz of the first core as /proc/cpuinfo reports it; 0 when unknown)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), 0.0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return model, flags, mhz


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def cpu_description() -> str:
    model, flags, _ = cpu_info()
    shown = [f for f in SHOWN_FLAGS if f in flags]
    # instruction-set caps (e.g. a run standing in for a CPU without AMX) change what the flags mean: say so
    caps = [f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k)]
    limited = f"; limited by {' '.join(caps)}" if caps else ""
    return f"{model} ({os.cpu_count()} cores; {' '.join(shown) or 'no avx2'}{limited})"


def peak_gflops(precision: str, cores: int) -> tuple[float, str]:
    """Theoretical peak GFLOP/s of ``cores`` cores at the reported clock, and the assumption it rests on.

    fp32: 2 FMA units of the widest vector (AVX-512: 64 FLOP/cycle, AVX2: 32). bf16: AMX's tile unit (1024
    FLOP/cycle per core), else AVX-512 BF16 dot products (128 FLOP/cycle), else fp32's rate."""
    _, flags, mhz = cpu_info()
    ghz = mhz / 1000.0 if mhz else 2.0
    if precision == "bf16" and "amx_bf16" in flags:
        per, how = 1024, "AMX bf16, 1024 FLOP/cycle/core"
    elif precision == "bf16" and "avx512_bf16" in flags:
        per, how = 128, "AVX-512 BF16, 128 FLOP/cycle/core"
    elif "avx512f" in flags:
        per, how = 64, "AVX-512 fp32, 2 FMA units, 64 FLOP/cycle/core"
    else:
        per, how = 32, "AVX2 fp32, 2 FMA units, 32 FLOP/cycle/core"
    return cores * ghz * per, f"{how} x {cores} cores x {ghz:.2f} GHz{'' if mhz else ' (clock unknown: 2 GHz assumed)'}"
