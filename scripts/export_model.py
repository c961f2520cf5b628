#!/usr/bin/env python
"""Export the dints_pancreas network as TorchScript or TensorRT (like the bundle's ``trt_export``).

    python scripts/export_model.py                                  # TorchScript of the cpu profile's weights
    python scripts/export_model.py --format tensorrt --profile gpu --precision fp16 --dynamic_batchsize 1,4,8
    python scripts/export_model.py --format aot                     # the CPU's compiled package (minutes)

Without ``--output`` the file goes to the engine cache next to the weights (``model/engines/``), named by
a key of weights checksum, precision, batch range, window size, device and library versions: the server
(``--conf backend torchscript|tensorrt``; ``aot`` also for ``auto`` on the CPU) loads it instead of building it. TensorRT needs CUDA and the
optional GPU extra (``pip install -r requirements-gpu.txt``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    from lib.networks.factory import NetworkSpec
    from lib.profiles import get_profile, normalise_network
    from lib.runtime.export import export_model
    from lib.task import get_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", default="torchscript", choices=["torchscript", "tensorrt", "aot"],
                   help="aot: the CPU's compiled package (AOTInductor .pt2) that --conf backend auto/aot loads")
    p.add_argument("--profile", default=None, help="cpu or gpu (default: from the hardware)")
    p.add_argument("--task", default="pancreas", help="pancreas or spleen (as --conf task)")
    p.add_argument("--network", default="dints", help="dints or unet (as --conf network)")
    p.add_argument("--model_dir", default=os.path.join(ROOT, "model"))
    p.add_argument("--weights", default=None, help="default: the profile's trained weights if present, else its pretrained")
    p.add_argument("--arch_file", default=None, help="default: the profile's architecture file")
    p.add_argument("--channel_mul", type=float, default=None)
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32"], help="TensorRT only")
    p.add_argument("--roi_size", type=int, default=None)
    p.add_argument("--dynamic_batchsize", default="1,4,8", help="MIN,OPT,MAX batch")
    p.add_argument("--output", default=None, help="default: the server's engine cache next to the weights")
    p.add_argument("--device", default=None)
    p.add_argument("--no_verify", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    profile, task, network = get_profile(args.profile), get_task(args.task), normalise_network(args.network)
    weights = args.weights
    if weights is None:
        trained = os.path.join(args.model_dir, profile.trained_file(network, task.name))
        weights = trained if os.path.exists(trained) else os.path.join(args.model_dir, profile.pretrained_file(network, task.name))
    arch_file = args.arch_file or os.path.join(args.model_dir, profile.arch_file)
    spec = NetworkSpec(network, task.num_classes, args.channel_mul or profile.channel_mul, arch_file)
    lo, opt, hi = (int(v) for v in args.dynamic_batchsize.split(","))
    roi = (args.roi_size,) * 3 if args.roi_size else tuple(profile.roi_size)
    path = export_model(
        weights, args.format, spec, args.precision, roi,
        (lo, hi), profile.sw_batch_size if args.format == "aot" else opt, args.output, args.device,
        verify=not args.no_verify,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
