"""INT8 for the shipped ``cpu`` network on a CPU: NNCF post-training quantisation of the OpenVINO model, timed and
checked against the served precisions, side by side in one run.

    pip install nncf                       # not a dependency of the app: only this measurement needs it
    python benchmarks/int8_cpu.py          # about 2 minutes on 2 cores
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/int8_cpu.py   # the stand-in for a CPU without AMX

Why it is a benchmark and not a backend: the app serves a lower precision only once its labels agree with fp32's at
Dice >= 0.99 on every calibration image (:mod:`lib.runtime.reduced_precision`). This prints, for each variant, the
time of one 2 x 96^3 batch (the served window batch) and its label agreement with PyTorch fp32 on sample windows,
so whether INT8 could pass that gate, and whether it would pay, is read off one table.

Calibration: the first ``--calibration`` sample studies (``sample-datastore``), preprocessed as the server does and
cut to one window each; agreement is measured on every sample study, so the images after those were not calibrated
on. Variants: NNCF's ``performance`` preset (symmetric), its ``mixed`` preset (asymmetric activations), and
``performance`` with the first and last convolutions left in float (the usual sensitive layers). INT8 runs with
f32 for what is not quantised, and with bf16 there where the CPU has native bf16.

``--accuracy_control`` adds NNCF's accuracy-controlled quantisation: it puts quantised operations back into float,
one at a time, until the worst label agreement on the calibration windows is within 0.01 of fp32's. It logs each
step; on the shipped network it ranks 188 operations first, so expect an hour or more on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibration", type=int, default=3, help="sample studies calibrated on (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="timed batches per variant, median (default %(default)s)")
    ap.add_argument("--accuracy_control", action="store_true",
                    help="also NNCF's accuracy-controlled quantisation (an hour or more on 2 cores)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from benchmarks.machine import cpu_description
    from benchmarks.timing import median_seconds
    from lib.networks.factory import NetworkSpec
    from lib.profiles import get_profile
    from lib.runtime.openvino_backend import _openvino, compile_for_cpu, convert, openvino_installed
    from lib.runtime.reduced_precision import cpu_bf16_flags, label_agreement
    from lib.task import get_task
    from lib.transforms.calibration import CalibrationImages

    print(f"machine: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not openvino_installed():
        print("[skip] the openvino package is not installed")
        return 0
    _openvino()  # imported with its telemetry blocked, before NNCF imports it
    try:
        import nncf
    except ImportError:
        print("[skip] nncf is not installed (pip install nncf): it is only needed for this measurement")
        return 0

    profile = get_profile("cpu")
    net, _ = NetworkSpec("dints", 3, profile.channel_mul, os.path.join(ROOT, "model", profile.arch_file)).load(
        os.path.join(ROOT, "model", profile.pretrained_file("dints", "pancreas")))
    net.eval()
    batch = profile.sw_batch_size
    windows = CalibrationImages(os.path.join(ROOT, "sample-datastore"), get_task("pancreas"), profile.spacing,
                                profile.roi_size, max_images=100).windows()
    print(f"openvino {_openvino().__version__}, nncf {nncf.__version__}; {len(windows)} sample windows, the first "
          f"{args.calibration} calibrated on; batch {batch}x{'x'.join(map(str, profile.roi_size))}")

    def batch_of(i):  # a served batch: this window and the next
        return np.concatenate([windows[i][1].numpy(), windows[(i + 1) % len(windows)][1].numpy()])

    model = convert(net, profile.roi_size, batch)
    calibration = nncf.Dataset([batch_of(i) for i in range(args.calibration)])
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    presets = {
        "int8 performance": dict(preset=nncf.QuantizationPreset.PERFORMANCE),
        "int8 mixed": dict(preset=nncf.QuantizationPreset.MIXED),
        "int8 performance, first and last conv float": dict(ignored_scope=nncf.IgnoredScope(names=[convs[0], convs[-1]])),
    }
    variants = [("openvino f32", compile_for_cpu(model, "f32"))]
    if cpu_bf16_flags():
        variants.append(("openvino bf16", compile_for_cpu(model, "bf16")))
    for name, kwargs in presets.items():
        start = time.time()
        quantised = nncf.quantize(model, calibration, subset_size=args.calibration, **kwargs)
        print(f"{name}: quantised in {time.time() - start:.1f} s")
        variants.append((name, compile_for_cpu(quantised, "f32")))
        if cpu_bf16_flags():
            variants.append((f"{name} + bf16", compile_for_cpu(quantised, "bf16")))
    if args.accuracy_control:
        with torch.no_grad():
            calibrated = [net(torch.from_numpy(batch_of(i))) for i in range(args.calibration)]

        def worst_agreement(compiled, indices) -> float:  # NNCF hands back the validation items untransformed
            return min(label_agreement(calibrated[i], torch.from_numpy(np.asarray(compiled(batch_of(i))[0])))
                       for i in indices)

        start = time.time()
        quantised = nncf.quantize_with_accuracy_control(
            model, calibration, nncf.Dataset(list(range(args.calibration))), validation_fn=worst_agreement,
            max_drop=0.01, drop_type=nncf.DropType.ABSOLUTE, subset_size=args.calibration)
        print(f"int8 accuracy-controlled: quantised in {time.time() - start:.0f} s")
        variants.append(("int8 accuracy-controlled", compile_for_cpu(quantised, "f32")))

    x = torch.from_numpy(batch_of(0))
    with torch.no_grad():
        references = [net(w) for _, w in windows]
    print("\n| variant | ms per batch | speed-up over openvino f32 | label agreement with fp32, worst | on calibrated | "
          "on the others |")
    print("|---|---|---|---|---|---|")
    base = None
    for name, runner in variants:
        ms = 1000 * median_seconds(runner, x, args.rounds)
        base = base or ms
        agree = [label_agreement(ref, runner(torch.cat([w] * batch))[:1]) for ref, (_, w) in zip(references, windows)]
        seen, unseen = agree[: args.calibration], agree[args.calibration:] or [float("nan")]
        print(f"| {name} | {ms:.0f} | {base / ms:.2f}x | {min(agree):.4f} | {min(seen):.4f} | {min(unseen):.4f} |")
    print("\nThe app's gate: label agreement >= 0.99 on every calibration image.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
