#!/usr/bin/env python
"""Inference speed, memory and accuracy: the model-zoo bundle's pipeline vs ours, side by side.

    python benchmarks/infer_speed.py --quick      # real CT + one phantom, a few minutes on 2 cores
    python benchmarks/infer_speed.py              # real CT + realistic-size phantoms (512x512 in-plane)

(a) ``bundle``: a faithful re-implementation of ``pancreas_ct_dints_segmentation``'s ``inference.json``:
    LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(model spacing, bilinear) ->
    ScaleIntensityRanged(-87..199 -> 0..1, clip) -> SlidingWindowInferer(roi 96^3, sw_batch 4, overlap 0.625,
    constant blending) -> softmax -> Invertd(nearest_interp=False) -> argmax -> SaveImaged (.nii.gz).
(b) ``ours``: the ``dints_pancreas`` infer task as the server runs it (``--conf`` defaults: backend auto, which
    on a CPU with native bf16 is bf16 once its accuracy gate passes, else the compiled package once the server has
    built it; coarse-to-fine fast path), writing its .nii.gz. ``--ours_backend auto,aot,torch`` runs several side by
    side (each one's engine, package or gate prepared before the clock starts, as in a running server).
``--model_table`` prints only the model computation per network and backend, with GFLOP/s against the CPU's peak.

Both use the same weights (default: the shipped cpu-profile weights) and the same volumes. Every
(pipeline, volume) runs in a fresh subprocess so that its peak RSS is its own (``VmHWM`` of /proc/self/status:
``ru_maxrss`` would not do, Linux carries the parent's high-water mark over fork + exec); wall time is
the pipeline from the file path to the written label (process start-up, the network load and, for ours, the
compiled package's build or load are excluded, as in a running server; the warm-up time is printed). Printed per volume and in total: time and ratio, peak RSS and ratio, Dice of each
against the phantom's ground truth, and the Dice agreement between the two outputs. On a CUDA machine it
also prints the model-computation table (ms per 96^3 batch) in the bundle README's layout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED = os.environ.get("DINTS_LABEL_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
REAL_CT = os.path.join(SHARED, "data", "real-ct", "example_ct.nii.gz")
REAL_CT_REF = os.path.join(SHARED, "data", "real-ct", "example_ct_pancreas_reference.nii.gz")


# ---- the two pipelines (run in a child process) -----------------------------------------------------------
def load_net(weights, arch_file, channel_mul):
    from lib.networks.factory import NetworkSpec

    net, _ = NetworkSpec("dints", 3, channel_mul, arch_file).load(weights)
    return net.eval()


def run_bundle(image, out, weights, arch_file, profile):
    """The bundle's inference.json, transform by transform (monai 1.6 API)."""
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    net = load_net(weights, arch_file, profile.channel_mul)
    start = time.time()
    pre = Compose([
        LoadImaged(keys="image"),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=profile.spacing, mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-87, a_max=199, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys="image"),
    ])
    data = pre({"image": image})
    inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=4, overlap=0.625, mode="constant")
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], net)[0]
    out_dir = os.path.dirname(out)
    post = Compose([
        Activationsd(keys="pred", softmax=True),
        Invertd(keys="pred", transform=pre, orig_keys="image", meta_keys="pred_meta_dict", nearest_interp=False, to_tensor=True),
        AsDiscreted(keys="pred", argmax=True),
        SaveImaged(keys="pred", meta_keys="pred_meta_dict", output_dir=out_dir, output_postfix="seg", resample=False,
                   separate_folder=False, output_dtype="uint8", print_log=False),
    ])
    data = post(data)
    seconds = time.time() - start
    written = [f for f in os.listdir(out_dir) if f.endswith("_seg.nii.gz")]
    os.replace(os.path.join(out_dir, written[0]), out)
    return seconds, {}


def run_ours(image, out, weights, arch_file, profile, conf=None):
    import shutil

    from lib.infers.segmentation import SegmentationInfer
    from lib.networks.factory import NetworkSpec
    from lib.params import truthy
    from lib.runtime.backends import BackendOptions
    from lib.runtime.fast_path import FastPathOptions
    from lib.runtime.served_model import ServedModel
    from lib.task import get_task
    from lib.transforms.calibration import CalibrationImages

    conf = dict(conf or {})
    pancreas = get_task("pancreas")
    served = ServedModel([weights], NetworkSpec("dints", pancreas.num_classes, profile.channel_mul, arch_file),
                         BackendOptions(roi_size=tuple(profile.roi_size), sw_batch_size=profile.sw_batch_size,
                                        calibration=CalibrationImages(os.path.join(ROOT, "sample-datastore"), pancreas,
                                                                      profile.spacing, profile.roi_size)),
                         background_compile=truthy(conf.get("background_compile", "true"), "background_compile"))
    task = SegmentationInfer(served, pancreas, profile, backend=conf.get("backend", "auto"),
                             fast_path=FastPathOptions(enabled=truthy(conf.get("fast_path", "true"), "fast_path")))
    # what a running server has done at start-up: the network loaded and (CPU, auto) its compiled package
    # built in the background, or loaded from the engine cache; timed apart, not part of the request
    warm = time.time()
    task.warm_up("cpu", wait=True)
    if task.backend != "auto":  # an explicit backend: its engine, package or bf16 gate, before the clock starts
        served.prepared("cpu", task.backend)
    warm_up_seconds = time.time() - warm
    start = time.time()
    path, result = task({"image": image, "result_extension": ".nii.gz", "device": "cpu"})
    seconds = time.time() - start
    shutil.move(path, out)
    return seconds, {**result.get("inference", {}), "warm_up_seconds": round(warm_up_seconds, 1)}


def peak_rss_bytes() -> int:
    """This process's peak resident set since it started (exec), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # other systems: may include the parent's


def child_main(args) -> int:
    import logging

    logging.disable(logging.WARNING)
    import torch

    from lib.profiles import get_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    if args.child == "bundle":
        seconds, info = run_bundle(args.image, args.out, args.weights, args.arch_file, profile)
    else:
        seconds, info = run_ours(args.image, args.out, args.weights, args.arch_file, profile, {"backend": args.ours_backend})
    peak = peak_rss_bytes()
    print("RESULT " + json.dumps({"seconds": seconds, "peak_rss": peak, "info": info}))
    return 0


# ---- volumes ----------------------------------------------------------------------------------------------
def synthetic_large(tmp, shape=(512, 512, 300), spacing=(0.8, 0.8, 2.5)):
    """A 512x512x300 CT-sized volume (body, fat, soft tissue, an organ; no ground truth) for the memory figure."""
    import nibabel as nib
    import numpy as np

    rng = np.random.RandomState(0)
    x, y = np.ogrid[: shape[0], : shape[1]]
    body = ((x - 256) / 220.0) ** 2 + ((y - 256) / 170.0) ** 2 < 1
    inner = ((x - 256) / 195.0) ** 2 + ((y - 256) / 145.0) ** 2 < 1
    img = np.full(shape, -1000, np.int16)
    img[body] = -100
    img[inner] = 40
    img[200:260, 230:260, 120:160] = 100
    img += rng.normal(0, 10, (shape[0], shape[1], 1)).astype(np.int16)
    path = os.path.join(tmp, "synthetic512.nii.gz")
    nib.save(nib.Nifti1Image(img, np.diag([*spacing, 1.0])), path)
    return ("synthetic-512", path, None, f"{'x'.join(map(str, shape))} @ {list(spacing)} mm (no ground truth; memory figure)")


def make_volumes(tmp, quick: bool, n_phantoms: int | None, size_test: bool = False):
    """[(name, image path, label path or None, description)]"""
    import nibabel as nib
    import numpy as np

    vols = []
    if os.path.exists(REAL_CT):
        img = nib.load(REAL_CT)
        vols.append(("real-ct", REAL_CT, REAL_CT_REF if os.path.exists(REAL_CT_REF) else None,
                     f"{'x'.join(map(str, img.shape))} @ {np.round(img.header.get_zooms()[:3], 2).tolist()} mm (reference: another model's mask)"))
    else:
        print(f"[skip] real CT absent: {REAL_CT}")
    if size_test:
        vols.append(synthetic_large(tmp))
    try:
        from lib.data.phantom import make_phantom, save_phantom
    except ImportError as exc:
        print(f"[skip] phantoms: lib.data.phantom not importable ({exc})")
        return vols
    n = n_phantoms if n_phantoms is not None else (1 if quick else 3)
    for i in range(n):
        seed = 9001 + i
        preset = "realistic"
        overrides = {}
        ph = make_phantom(seed, preset=preset, **overrides)
        ip, lp = os.path.join(tmp, f"phantom{seed}.nii.gz"), os.path.join(tmp, f"phantom{seed}_label.nii.gz")
        save_phantom(ph, ip, lp)
        zooms = np.sqrt((np.asarray(ph.affine)[:3, :3] ** 2).sum(0))
        vols.append((f"phantom-{seed}", ip, lp, f"{'x'.join(map(str, ph.image.shape))} @ {np.round(zooms, 2).tolist()} mm"))
    return vols


# ---- parent -----------------------------------------------------------------------------------------------
def run_child(kind, image, out, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--image", image, "--out", out,
           "--weights", args.weights, "--arch_file", args.arch_file, "--profile", args.profile,
           "--ours_backend", args.ours_backend]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} failed on {image}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def dice_fg(a, b, value=None):
    """Dice of class ``value`` (None: the foreground); NaN when absent from both, left out of the table's means."""
    from lib.metrics import dice

    if value is None:
        a, b, value = a > 0, b > 0, True
    return dice(a, b, value, empty=float("nan"))


def gpu_table(args):
    """Model computation per 96^3 batch (sw_batch 4) on CUDA: torch fp32, AMP, compile+AMP, TensorRT fp32/fp16."""
    import torch

    from lib.runtime.backends import BackendOptions, prepare

    net = load_net(args.weights, args.arch_file, args.channel_mul).cuda()
    x = torch.rand(4, 1, 96, 96, 96, device="cuda")
    rows = []
    for label, backend, prec in (("torch fp32", "torch", "fp32"), ("AMP", "amp", "fp16"), ("compile + AMP", "compile", "fp16"),
                                 ("TensorRT fp32", "tensorrt", "fp32"), ("TensorRT fp16", "tensorrt", "fp16")):
        p = prepare(net, backend, "cuda", BackendOptions(sw_batch_size=4, trt_precision=prec), args.weights, None)
        if p.backend != backend:
            rows.append((label, None, p.fallback_reason))
            continue
        with torch.no_grad():
            for _ in range(3):
                p.forward(x)
            torch.cuda.synchronize()
            t = time.time()
            for _ in range(10):
                p.forward(x)
            torch.cuda.synchronize()
        rows.append((label, (time.time() - t) / 10 * 1000, None))
    base = rows[0][1]
    print("\n| method | model computation (ms per 4x96^3 batch) | speed-up |\n|---|---|---|")
    for label, ms, why in rows:
        print(f"| {label} | {'n/a (' + why + ')' if ms is None else f'{ms:.1f}'} | {'' if ms is None else f'{base / ms:.2f}x'} |")


def main(argv=None) -> int:
    from lib.profiles import get_profile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="real CT + one realistic phantom")
    p.add_argument("--phantoms", type=int, default=None, help="number of realistic phantoms (default 1 quick, 3 full)")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--weights", default=None)
    p.add_argument("--arch_file", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--size_test", action="store_true", help="also a synthetic 512x512x300 volume (memory figure)")
    p.add_argument("--no_real", action="store_true", help="skip the real CT")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--ours_backend", default="auto",
                   help="backends of ours, comma-separated, each run side by side (default auto: bf16 on a CPU with "
                        "native bf16 once its gate passes, else the compiled package, built before timing), "
                        "e.g. torch,aot,bf16")
    p.add_argument("--model_table", action="store_true",
                   help="only the CPU model-computation table: ms per window batch, GFLOP/s and the share of the CPU's "
                        "peak, per network (shipped cpu; bundle-size DiNTS with the CVPR architecture) and backend")
    p.add_argument("--child", choices=["bundle", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    profile = get_profile(args.profile)
    args.weights = args.weights or os.path.join(ROOT, "model", profile.pretrained_file("dints", "pancreas"))
    args.arch_file = args.arch_file or os.path.join(ROOT, "model", profile.arch_file)
    args.channel_mul = profile.channel_mul
    if args.child:
        return child_main(args)
    sys.stdout.reconfigure(line_buffering=True)  # each volume's figures as soon as they are measured
    if args.model_table:
        from benchmarks.model_flops import model_table

        return model_table(args)
    backends = [b.strip() for b in args.ours_backend.split(",") if b.strip()]


    import nibabel as nib
    import numpy as np
    import psutil
    import torch

    from benchmarks.machine import cpu_description
    from lib.networks.factory import file_checksum

    print(f"machine: {cpu_description()}, {psutil.cpu_count(logical=True)} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, torch {torch.__version__}, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    print(f"weights: {os.path.relpath(args.weights, ROOT)} ({file_checksum(args.weights)}), profile {profile.name} "
          f"(spacing {profile.spacing} mm, roi {profile.roi_size})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="infer_speed_") as tmp:
        vols = make_volumes(tmp, args.quick, args.phantoms, args.size_test)
        if args.no_real:
            vols = [v for v in vols if v[0] != "real-ct"]
        for name, image, label, desc in vols:
            res = {}
            labels = {}
            for kind, backend in [("bundle", None)] + [("ours", b) for b in backends]:
                key = kind if backend in (None, backends[0]) else f"ours:{backend}"
                out_dir = os.path.join(tmp, f"{key.replace(':', '_')}_{name}")
                os.makedirs(out_dir)
                out = os.path.join(out_dir, "label.nii.gz")
                r = run_child(kind, image, out, argparse.Namespace(**{**vars(args), "ours_backend": backend or "auto"}))
                labels[key] = np.asarray(nib.load(out).dataobj).astype(np.uint8)
                res[key] = r
            truth = np.asarray(nib.load(label).dataobj).astype(np.uint8) if label else None
            row = {"volume": name, "desc": desc, "shape": list(labels["ours"].shape)}
            for kind in ("bundle", "ours"):
                row[f"{kind}_s"] = res[kind]["seconds"]
                row[f"{kind}_rss"] = res[kind]["peak_rss"]
                if truth is not None:
                    if name == "real-ct":  # a pancreas-only reference mask
                        row[f"{kind}_dice_pancreas"] = dice_fg(labels[kind], truth)
                    else:
                        row[f"{kind}_dice_pancreas"] = dice_fg(labels[kind], truth, 1)
                        row[f"{kind}_dice_tumor"] = dice_fg(labels[kind], truth, 2)
            row["agree_fg"] = dice_fg(labels["bundle"], labels["ours"])
            row["agree_pancreas"] = dice_fg(labels["bundle"], labels["ours"], 1)
            row["ours_info"] = res["ours"]["info"]
            row["variants"] = {key.split(":", 1)[1]: {
                "s": res[key]["seconds"], "rss": res[key]["peak_rss"], "backend": res[key]["info"].get("backend"),
                "agree_with_first": dice_fg(labels["ours"], labels[key]),
                "dice_pancreas": (dice_fg(labels[key], truth) if name == "real-ct" else dice_fg(labels[key], truth, 1))
                if truth is not None else None} for key in res if key.startswith("ours:")}
            rows.append(row)
            print_row(row)
    print_summary(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": cpu_description(), "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=1,
                      default=str)
    if torch.cuda.is_available():
        gpu_table(args)
    else:
        print("\n(no CUDA device: the GPU model-computation table is not measured on this machine)")
    return 0


def _f(v, fmt="{:.3f}"):
    import math

    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def print_row(r):
    gib = 2**30
    print(f"\n== {r['volume']}: {r['desc']}")
    print(f"   time      bundle {r['bundle_s']:7.1f} s   ours {r['ours_s']:6.1f} s   speed-up {r['bundle_s'] / r['ours_s']:.1f}x")
    print(f"   peak RSS  bundle {r['bundle_rss'] / gib:7.2f} GiB ours {r['ours_rss'] / gib:6.2f} GiB ratio (ours/bundle) {r['ours_rss'] / r['bundle_rss']:.2f}")
    if "bundle_dice_pancreas" in r:
        print(f"   Dice vs truth pancreas  bundle {_f(r['bundle_dice_pancreas'])}  ours {_f(r['ours_dice_pancreas'])}"
              + (f"   tumour bundle {_f(r['bundle_dice_tumor'])} ours {_f(r['ours_dice_tumor'])}" if "bundle_dice_tumor" in r else ""))
    print(f"   agreement bundle vs ours: Dice foreground {_f(r['agree_fg'])}  pancreas {_f(r['agree_pancreas'])}")
    info = r.get("ours_info") or {}
    if info:
        print(f"   ours: backend {info.get('backend')} (warm-up {info.get('warm_up_seconds')} s, not timed), {info.get('mode')} path, windows coarse {info.get('coarse_windows')} + fine {info.get('fine_windows')}"
              + (f"; {info['note']}" if info.get("note") else ""))
    for backend, v in (r.get("variants") or {}).items():
        print(f"   ours --backend {backend} (ran {v['backend']}): {v['s']:6.1f} s, speed-up {r['bundle_s'] / v['s']:.1f}x over the "
              f"bundle, {r['ours_s'] / v['s']:.2f}x over the first; peak {v['rss'] / gib:.2f} GiB; label agreement with the "
              f"first (fg Dice) {_f(v['agree_with_first'])}; Dice pancreas {_f(v['dice_pancreas'])}")


def print_summary(rows):
    import numpy as np

    if not rows:
        print("no volumes")
        return
    gib = 2**30
    tb, to = sum(r["bundle_s"] for r in rows), sum(r["ours_s"] for r in rows)
    rb, ro = max(r["bundle_rss"] for r in rows), max(r["ours_rss"] for r in rows)
    print("\n| volume | bundle s | ours s | speed-up | bundle peak GiB | ours peak GiB | Dice panc. bundle | Dice panc. ours | agreement (fg Dice) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['volume']} ({r['desc'].split(' (')[0]}) | {r['bundle_s']:.1f} | {r['ours_s']:.1f} | {r['bundle_s'] / r['ours_s']:.1f}x | "
              f"{r['bundle_rss'] / gib:.2f} | {r['ours_rss'] / gib:.2f} | {_f(r.get('bundle_dice_pancreas'))} | "
              f"{_f(r.get('ours_dice_pancreas'))} | {_f(r['agree_fg'])} |")
    ph = [r for r in rows if r["volume"].startswith("phantom")]
    db = np.nanmean([r["bundle_dice_pancreas"] for r in ph]) if ph else float("nan")
    do = np.nanmean([r["ours_dice_pancreas"] for r in ph]) if ph else float("nan")
    print(f"| **total** | {tb:.1f} | {to:.1f} | **{tb / to:.1f}x** | {rb / gib:.2f} (max) | {ro / gib:.2f} (max) | "
          f"{_f(float(db))} (phantoms) | {_f(float(do))} (phantoms) | |")
    print(f"\nTOTAL: speed-up {tb / to:.2f}x end-to-end; peak RSS ratio ours/bundle {ro / rb:.2f}; "
          f"phantom pancreas Dice bundle {_f(float(db))} vs ours {_f(float(do))}")
    for backend in rows[0].get("variants") or {}:
        tv = sum(r["variants"][backend]["s"] for r in rows)
        print(f"TOTAL ours --backend {backend}: speed-up {tb / tv:.2f}x over the bundle; peak RSS ratio "
              f"{max(r['variants'][backend]['rss'] for r in rows) / rb:.2f}; label agreement with the first backend "
              f"(fg Dice) min {min(r['variants'][backend]['agree_with_first'] for r in rows):.4f}")


if __name__ == "__main__":
    sys.exit(main())
