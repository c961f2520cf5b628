"""The ``openvino`` CPU backend: the network converted to an OpenVINO model, in bf16 where that is faster.

Why: OpenVINO's CPU plugin fuses each 3-D convolution with the normalisation and activation around it. Measured on
the shipped ``cpu`` network (a 2 x 96^3 batch, 2-core Intel Xeon with AMX, 2026-12-08): 0.16 s in bf16 against
0.28 s for PyTorch eager bf16 in its fast layouts; with oneDNN limited to AVX-512 BF16 (no AMX, as on an AMD EPYC),
0.28 s in OpenVINO's f32 against 0.54 s (docs/benchmarks.md).

* **Conversion** (``openvino.convert_model`` of the traced :class:`~lib.runtime.static_dints.StaticDiNTS`, one
  static batch shape, seconds for the ``cpu`` network) is cached in the engine cache as ``.xml`` + ``.bin``,
  keyed by the weights checksum, the window, the batch and the library versions (OpenVINO's included): a new
  model or an upgrade converts again.
* **Precision**: bf16 where the CPU has native bf16, ``--conf cpu_precision auto``, bf16 is faster than f32 on this
  CPU, and its labels agree with fp32's on the calibration images (the same gate and threshold as the ``bf16``
  backend, :mod:`lib.runtime.reduced_precision`); f32 otherwise (the answer's note says why). Faster is measured,
  not assumed: with oneDNN limited to AVX-512 BF16 (no AMX, standing in for an AMD EPYC) OpenVINO's bf16 took 319 ms
  a batch of the shipped ``cpu`` network and its f32 275 ms (2-core Intel Xeon, 2026-12-08), where with AMX bf16 is
  twice as fast. Both verdicts, speed and gate, are cached next to the model; the speed one per CPU model, ISA cap
  and thread count.
* ``--conf backend openvino`` converts in the server process, at the first request. CPU ``auto`` (with
  ``background_compile``) converts in a separate low-priority process (:func:`main`, started by
  :class:`lib.runtime.aot_package.BackgroundBuilds`), which also compiles and runs the model once before it writes
  the file. A fault inside OpenVINO's CPU plugin then ends that process, not the server: ``auto`` stays on its
  PyTorch path and says why. One such fault was seen, with oneDNN capped by ``ONEDNN_MAX_CPU_ISA=AVX2`` (a test
  set-up). Without the ``openvino`` package the backend is unavailable and the request falls back to ``torch``,
  saying why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import torch
from torch import nn

from lib import atomic
from lib.networks.factory import input_channels
from lib.runtime.aot_package import BackendUnavailable
from lib.runtime.engine_cache import default_engine_dir, engine_key, engine_path, library_versions, prune_engines
from lib.runtime.fixed_batch import FixedBatch
from lib.runtime.reduced_precision import GateResult, agreement_note, cached_gate, cpu_bf16_flags, cpu_info
from lib.runtime.static_dints import static_network

logger = logging.getLogger(__name__)


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_precision(opts) -> str:
    """``bf16`` where the CPU has native bf16 and ``cpu_precision`` is ``auto``, else ``f32``."""
    return "bf16" if cpu_bf16_flags() and getattr(opts, "cpu_precision", "auto") == "auto" else "f32"


def _versions() -> dict:
    return {**library_versions(), "openvino": _openvino().__version__}


def model_path(weights_path: str, checksum: str, opts, in_channels: int) -> str:
    """Where the converted model (``.xml``; its weights in the ``.bin`` of the same stem) lives."""
    engine_dir = opts.engine_dir or default_engine_dir(weights_path)
    versions = {**_versions(), "in_channels": int(in_channels), "cpu_bf16": cpu_bf16_flags(), "input": "static"}
    key = engine_key(checksum, "openvino", "ir", (opts.sw_batch_size, opts.sw_batch_size), opts.roi_size, "cpu", versions)
    return engine_path(engine_dir, weights_path, "openvino", "ir", key, ext=".xml")


def _openvino():
    """``import openvino``, without its usage statistics. On import, and on every conversion, OpenVINO sends events
    to Google Analytics through ``openvino_telemetry`` unless the user has opted out, and it writes a client id to
    ``~/intel/openvino_ga_cid``. A server of patient images talks to nobody. With the telemetry package marked
    unimportable (``None`` in ``sys.modules``), OpenVINO falls back to its own silent stub."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def _convert(net: nn.Module, roi_size, batch: int):
    """The OpenVINO model of ``net`` for one (batch, C, *roi_size) input shape."""
    ov = _openvino()

    example = torch.zeros((int(batch), input_channels(net), *roi_size))
    # the trace is of one static shape: its warnings (instance norm's channel check, shape arithmetic) are moot
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(static_network(net).eval(), example_input=example)
    # the converter leaves every input dimension open; fixed, the CPU plugin picks its kernels once (about 10 % faster
    # a batch of the cpu network in f32 and bf16, with and without AMX; 2-core Intel Xeon, 2026-12-08)
    model.reshape({model.inputs[0]: list(example.shape)})
    return model


def _save(model, path: str) -> bool:
    """``path`` (.xml) and its .bin, both written in a scratch folder and moved (the .bin first), the older
    conversions of the same weights file and their verdicts pruned; False (a warning) where it cannot be written."""
    ov = _openvino()

    folder = os.path.dirname(os.path.abspath(path))
    scratch = None
    try:
        os.makedirs(folder, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".openvino-", dir=folder)
        tmp_xml = os.path.join(scratch, os.path.basename(path))
        ov.save_model(model, tmp_xml, compress_to_fp16=False)
        os.replace(tmp_xml[:-4] + ".bin", path[:-4] + ".bin")
        os.replace(tmp_xml, path)
    except OSError as exc:  # an unwritable engine_dir: serve the converted model, convert again next start
        logger.warning(f"Could not cache the OpenVINO model in {folder}: {exc}")
        return False
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    for ext in (".xml", ".bin", ".json"):  # the verdicts (.json) of this model are named after it: kept
        prune_engines(folder, path, "openvino", "ir", keep=path[:-4] + (ext if ext != ".json" else ""), ext=ext)
    return True


class OpenVinoModel:
    """Batch (a torch tensor of the converted shape) -> fp32 class scores, one infer request per calling thread."""

    def __init__(self, compiled, precision: str):
        self.compiled, self.precision = compiled, precision
        self._local = threading.local()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(out[0], dtype=np.float32, copy=True))


def compile_for_cpu(model, precision: str) -> OpenVinoModel:
    """An OpenVINO model compiled for this CPU in ``precision`` (``bf16`` or ``f32``), on torch's thread count."""
    ov = _openvino()

    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(torch.get_num_threads())}
    return OpenVinoModel(ov.Core().compile_model(model, "CPU", config), precision)


def _cpu_identity() -> str:
    """What the speed verdict depends on besides the model: the CPU model, any oneDNN ISA cap, the thread count."""
    parts = [cpu_info()[0], os.environ.get("ONEDNN_MAX_CPU_ISA", ""), str(torch.get_num_threads())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def speed_path(ir_path: str) -> str:
    """Where the f32-or-bf16 speed verdict of the model at ``ir_path`` lives, for this CPU and thread count."""
    return f"{ir_path[:-4]}.speed-{_cpu_identity()}.json"


def time_precisions(model, shape, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per ``shape`` batch of ``model`` compiled for this CPU in f32 and in bf16: one warm-up each, then
    ``rounds`` runs of each taken in turn (so a busy moment of the machine falls on both), the median of each."""
    x = torch.zeros(tuple(int(d) for d in shape))
    runners = {precision: compile_for_cpu(model, precision) for precision in ("f32", "bf16")}
    seconds = {precision: [] for precision in runners}
    for runner in runners.values():
        runner(x)
    for _ in range(rounds):
        for precision, runner in runners.items():
            start = time.perf_counter()
            runner(x)
            seconds[precision].append(time.perf_counter() - start)
    return {precision: round(1000 * statistics.median(s), 1) for precision, s in seconds.items()}


def faster_precision(model, shape, path: str | None) -> tuple[str, dict[str, float]]:
    """(``bf16`` or ``f32``, the ms per batch of each): read from the speed verdict at ``path`` where one was written
    on this CPU, else measured now and written there (``path`` None: measured, not kept)."""
    if path and os.path.exists(path):
        try:
            timings = {k: float(v) for k, v in json.loads(open(path, encoding="utf-8").read())["ms_per_batch"].items()}
            return ("bf16" if timings["bf16"] < timings["f32"] else "f32"), timings
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            logger.warning(f"OpenVINO speed verdict {os.path.basename(path)} unreadable ({exc}); measuring again")
    timings = time_precisions(model, shape)
    if path:
        try:
            atomic.write_json(path, {"ms_per_batch": timings})
        except OSError as exc:
            logger.warning(f"Could not keep the OpenVINO speed verdict {path}: {exc}")
    logger.info(f"OpenVINO ms per batch on this CPU: {timings}")
    return ("bf16" if timings["bf16"] < timings["f32"] else "f32"), timings


def convert(net: nn.Module, roi_size, batch: int):
    """The OpenVINO model of ``net`` for (batch, C, *roi_size) inputs, not cached (the benchmarks)."""
    return _convert(net, tuple(roi_size), batch)


def _gate(net: nn.Module, candidate, opts, ir_path: str | None):
    """The bf16 verdict against fp32 on the calibration images, cached next to the converted model."""
    calibration = getattr(opts, "calibration", None)
    if calibration is None:
        raise BackendUnavailable("no calibration images to check OpenVINO bf16 against fp32 (--conf calibration_dir)")
    verdict = f"{ir_path[:-4]}.gate-{calibration.identity()}-{'-'.join(cpu_bf16_flags())}.json" if ir_path else None
    return cached_gate(net, FixedBatch(candidate, opts.sw_batch_size), calibration, verdict, "OpenVINO bf16")


def build_openvino(net: nn.Module, device, opts, weights_path: str | None, checksum: str | None):
    """(callable, precision, model file, info): the converted model, loaded from the engine cache or converted now."""
    if str(device).startswith("cuda"):
        raise BackendUnavailable("'openvino' is the CPU backend; on CUDA use 'compile' or 'tensorrt'")
    if not openvino_installed():
        raise BackendUnavailable("the openvino package is not installed (pip install openvino)")
    ov = _openvino()

    path = model_path(weights_path, checksum, opts, input_channels(net)) if weights_path and checksum else None
    model = None
    if path and os.path.exists(path) and os.path.exists(path[:-4] + ".bin"):
        try:
            model = ov.Core().read_model(path)
        except Exception as exc:
            logger.warning(f"Cached OpenVINO model {os.path.basename(path)} unreadable ({exc}); converting again")
    if model is None:
        model = _convert(net, opts.roi_size, opts.sw_batch_size)
        if path and not _save(model, path):
            path = None  # not cached: nothing to name in the answer
    if openvino_precision(opts) == "f32":
        return compile_for_cpu(model, "f32"), "fp32", path, {}
    shape = (opts.sw_batch_size, input_channels(net), *opts.roi_size)
    faster, timings = faster_precision(model, shape, speed_path(path) if path else None)
    if faster == "f32":  # bf16 does not pay on this CPU: no gate needed
        return compile_for_cpu(model, "f32"), "fp32", path, {
            "note": f"OpenVINO fp32: faster than bf16 on this CPU ({timings['f32']:.0f} vs {timings['bf16']:.0f} ms a batch)"}
    bf16 = compile_for_cpu(model, "bf16")
    try:
        result = _gate(net, bf16, opts, path)
    except BackendUnavailable as exc:
        result = GateResult(False, {}, str(exc))
    if not result.passed:  # OpenVINO's f32 is still the faster fp32 path: stay on it, saying why
        return compile_for_cpu(model, "f32"), "fp32", path, {"note": f"OpenVINO fp32: bf16 not used ({result.reason})"}
    return bf16, "bf16", path, {"note": agreement_note(result)}


def main(argv=None) -> int:
    """The background converter ``auto`` starts (:class:`lib.runtime.aot_package.BackgroundBuilds`): convert, compile
    for this CPU in ``--precision`` and run one batch (with ``bf16``: time it against f32 and keep the speed
    verdict), and only then write the model. A fault inside OpenVINO ends this process, not the server, and leaves no
    model file, so ``auto`` stays on its PyTorch path."""
    from lib.runtime.aot_package import builder_network, builder_parser, run_builder

    p = builder_parser("Convert a checkpoint to OpenVINO and check that it runs on this CPU.")
    p.add_argument("--precision", choices=("bf16", "f32"), default="f32", help="the precision the server will run")
    p.add_argument("--threads", type=int, default=0, help="the server's thread count, which the timing is for")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def build():
        net = builder_network(args).eval()
        model = _convert(net, tuple(args.roi_size), args.batch)
        runner = compile_for_cpu(model, args.precision)
        shape = (args.batch, input_channels(net), *args.roi_size)
        out = runner(torch.zeros(shape))
        if not torch.isfinite(out).all():
            raise RuntimeError(f"OpenVINO {args.precision} gives non-finite scores on this CPU")
        if args.precision == "bf16":  # which precision pays here: measured once, off the server's requests
            faster_precision(model, shape, speed_path(args.out))
        if not _save(model, args.out):
            raise OSError(f"cannot write {args.out}")

    return run_builder(build, args.out)


if __name__ == "__main__":
    sys.exit(main())
