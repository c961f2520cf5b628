"""Benchmarks name the CPU they ran on, and say so when its instruction set was capped for the run (a stand-in for
a CPU without AMX must not read as a figure of this CPU)."""

from __future__ import annotations

from benchmarks.machine import ISA_CAPS, cpu_description


def test_the_cpu_description_says_when_the_instruction_set_was_capped(monkeypatch):
    for name in ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    plain = cpu_description()
    assert "limited by" not in plain and "cores" in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    capped = cpu_description()
    assert capped.startswith(plain[:-1]) and capped.endswith("; limited by ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16)")
