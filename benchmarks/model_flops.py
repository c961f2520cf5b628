"""The CPU model-computation table of ``benchmarks/infer_speed.py --model_table``: per network and backend, the
milliseconds of one sliding-window batch, the FLOPs of that batch (``torch.utils.flop_counter``), the achieved
GFLOP/s and its share of the CPU's theoretical peak (:func:`benchmarks.machine.peak_gflops`).

Networks: the shipped ``cpu`` network (its weights) and the bundle-size DiNTS (``channel_mul`` 1, 12 blocks, the
CVPR architecture from ``../shared``, random weights: its speed does not depend on them). The label agreement of
bf16 with fp32 is printed for the shipped weights only (on two sample-CT windows); with random weights it would
mean nothing.
"""

from __future__ import annotations

import copy
import os
import time

import torch

from benchmarks.machine import cpu_description, peak_gflops


def _seconds(fn, x, reps: int) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        y = fn(x)  # warm-up (oneDNN primitive creation)
        start = time.time()
        for _ in range(reps):
            y = fn(x)
    return (time.time() - start) / reps, y


def _flops(net, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())


def model_table(args) -> int:
    from lib.networks.arch_code import load_arch_code
    from lib.networks.factory import NetworkSpec, build_dints
    from lib.runtime.openvino_backend import compile_for_cpu, convert, openvino_installed
    from lib.runtime.reduced_precision import Bf16Model, cpu_bf16_flags, label_agreement
    from lib.runtime.static_dints import static_network
    from lib.task import get_task
    from lib.transforms.calibration import CalibrationImages

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"machine: {cpu_description()}; torch {torch.__version__}, {threads} threads")
    nets = []
    cpu, _ = NetworkSpec("dints", 3, 0.25, args.arch_file).load(args.weights)
    # two windows of sample CTs as the server preprocesses them: the label agreement is then one on anatomy
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    windows = CalibrationImages(os.path.join(root, "sample-datastore"), get_task("pancreas"), (2.0, 2.0, 2.0),
                                (96, 96, 96)).windows()[:2]
    nets.append(("shipped cpu (channel_mul 0.25, 4 blocks)", cpu, torch.cat([w for _, w in windows]), 3, True))
    cvpr = os.path.join(root, "..", "shared", "data", "dints", "arch_code_cvpr.pth")
    if os.path.exists(cvpr):
        torch.manual_seed(0)
        nets.append(("bundle-size (channel_mul 1, 12 blocks, CVPR arch, random weights)",
                     build_dints(load_arch_code(cvpr), 1.0, 3).eval(), torch.rand(1, 1, 96, 96, 96), 1, False))
    else:
        print(f"[skip] bundle-size network: no CVPR architecture at {cvpr}")
    print("\n| network | backend | batch | ms per batch | GFLOP per batch | GFLOP/s | % of peak | speed-up | labels vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes = set()
    for title, net, x, reps, real_weights in nets:
        flops = _flops(net, x)
        variants = [("torch fp32", net, "fp32")]
        if cpu_bf16_flags():
            variants.append(("bf16", Bf16Model(copy.deepcopy(net)), "bf16"))
        if real_weights:  # inductor: minutes to compile the bundle-size network, so the cpu network only
            variants.append(("compile fp32", torch.compile(static_network(copy.deepcopy(net)), dynamic=False), "fp32"))
        if openvino_installed():  # the `openvino` backend (conversion not timed, as in a running server)
            model = convert(net, x.shape[2:], x.shape[0])
            variants.append(("openvino f32", compile_for_cpu(model, "f32"), "fp32"))
            if cpu_bf16_flags():
                variants.append(("openvino bf16", compile_for_cpu(model, "bf16"), "bf16"))
        base, ref = None, None
        for name, fn, precision in variants:
            seconds, y = _seconds(fn, x, reps)
            base = base or seconds
            ref = y if ref is None else ref
            peak, how = peak_gflops(precision, threads)
            notes.add(f"peak {precision}: {peak:.0f} GFLOP/s ({how})")
            agree = f"{label_agreement(ref, y):.4f}" if real_weights else "n/a"
            print(f"| {title} | {name} | {x.shape[0]}x96^3 | {seconds * 1000:.0f} | {flops / 1e9:.1f} | "
                  f"{flops / seconds / 1e9:.0f} | {100 * flops / seconds / 1e9 / peak:.1f} | {base / seconds:.2f}x | {agree} |")
    for note in sorted(notes):
        print(f"- {note}")
    return 0
