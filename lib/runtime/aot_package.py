"""The CPU's compiled network: an AOTInductor package (``.pt2``) built once per weights version, cached on disk.

``torch.compile`` makes the DiNTS forward about 1.4x faster on a 2-core CPU, but it compiles inside the
server process (about 2.5 minutes there, with the process's Python busy tracing, which slows every request
running meanwhile) and again after every restart. Inductor's ahead-of-time mode gives the same kernels as a
file: ``torch.export`` of the static-architecture forward, compiled to a shared library with the weights in
it, loaded in a fraction of a second by any later process. So the server builds it once per weights version,
in a separate low-priority process (:class:`BackgroundBuilds`), while requests run eagerly; the next
request after the file appears loads it. The file sits in the engine cache next to the weights, keyed like
the other engines (weights checksum, window, batch, library versions), so a model published by training
gets its own package and the old one is pruned.

    python -m lib.runtime.aot_package --weights model/pretrained_dints_pancreas_cpu.pt --out <file>.pt2

is the builder the background process runs (also usable by hand). :class:`BackgroundBuilds` also runs OpenVINO's
converter (:mod:`lib.runtime.openvino_backend`), which takes the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence

import torch

from lib import atomic
from lib.runtime.engine_cache import default_engine_dir, engine_key, engine_path, library_versions, prune_engines
from lib.networks.factory import input_channels
from lib.runtime.static_dints import static_network

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# inductor settings of the build, part of the package's cache key. Freezing folds the weights into the graph as
# constants (they are baked into the package anyway), which lets inductor prepack them for oneDNN's convolutions:
# 1.09 s vs 1.23 s per 2x96^3 batch on a 2-core CPU (eager: 1.62 s).
INDUCTOR_CONFIGS = {"freezing": True}


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message says why (it is logged, then we fall back).

    Defined here, the lowest module that raises it: :mod:`lib.runtime.backends` imports it (and
    :func:`check_cpu_compiler`) from here, and this module never imports backends, so there is no import circle."""


def check_cpu_compiler() -> None:
    """Inductor on the CPU writes C++ and needs a compiler to build it (this package and the ``compile`` backend)."""
    import shutil

    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]
    if not any(shutil.which(c) for c in names + ["g++", "c++", "clang++"]):
        raise BackendUnavailable("compiling for the CPU needs a C++ compiler (g++/clang++), none found on PATH")


def aot_package_path(weights_path: str, checksum: str, opts) -> str:
    """Where the AOTInductor CPU package of these weights / window / batch / libraries lives."""
    engine_dir = opts.engine_dir or default_engine_dir(weights_path)
    versions = {**library_versions(), "inductor_configs": json.dumps(INDUCTOR_CONFIGS, sort_keys=True)}
    key = engine_key(checksum, "aot", "fp32", (opts.sw_batch_size, opts.sw_batch_size), opts.roi_size, "cpu", versions)
    return engine_path(engine_dir, weights_path, "aot", "fp32", key, ext=".pt2")


def build_package(net: torch.nn.Module, path: str, roi_size: Sequence[int], batch: int,
                  weights_path: str | None = None) -> str:
    """Export + AOT-compile ``net`` for (``batch``, channels, *``roi_size``) CPU inputs into ``path`` (atomically).
    ``weights_path``: the file ``path`` is the cached package of; that file's other (stale) packages beside it go."""
    model = static_network(net).cpu().eval()
    example = torch.zeros((int(batch), input_channels(net), *(int(r) for r in roi_size)))

    def compile_to(tmp: str) -> None:
        with torch.no_grad():
            exported = torch.export.export(model, (example,))
            torch._inductor.aoti_compile_and_package(exported, package_path=tmp, inductor_configs=dict(INDUCTOR_CONFIGS))

    atomic.write_with(path, compile_to, suffix=".pt2")  # the packager insists on the .pt2 suffix
    if weights_path:
        prune_engines(os.path.dirname(os.path.abspath(path)), weights_path, "aot", "fp32", path, ext=".pt2")
    return path


def load_package(path: str) -> Callable:
    """The compiled forward stored in ``path`` (fixed input shape: pad partial batches, see ``FixedBatch``)."""
    return torch._inductor.aoti_load_package(path)


class BackgroundBuilds:
    """At most one low-priority builder process per package file; remembers failures so it does not retry them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen] = {}
        self.failed: dict[str, str] = {}

    def start(self, path: str, weights: str, spec, roi_size, batch: int, nice: int = 10,
              module: str = "lib.runtime.aot_package", extra: Sequence[str] = ()) -> bool:
        """Start building ``path`` (``python -m module``: this module's builder, or another with the same arguments
        plus ``extra``) unless it exists, is being built or failed before; True if a build runs now."""
        with self._lock:
            if os.path.exists(path) or path in self.failed:
                return False
            proc = self._running.get(path)
            if proc is not None and proc.poll() is None:
                return True
            cmd = [sys.executable, "-m", module, "--weights", weights, "--out", path,
                   *spec.cli_args(), "--roi_size", *(str(int(r)) for r in roi_size), "--batch", str(int(batch)),
                   *extra]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
            try:  # e.g. a read-only engine_dir: say so once, the requests go on eagerly
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                with open(f"{path}.log", "w") as log:
                    proc = subprocess.Popen(
                        cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                        preexec_fn=(lambda: os.nice(nice)) if nice > 0 and hasattr(os, "nice") else None)
            except OSError as exc:
                self.failed[path] = f"cannot start the build: {exc}"
                logger.warning(f"Building {os.path.basename(path)} failed ({self.failed[path]}); auto stays on PyTorch")
                return False
            self._running[path] = proc
            logger.info(f"Building {os.path.basename(path)} in the background "
                        f"(pid {proc.pid}, nice {nice}); requests run on PyTorch until it is ready")
            threading.Thread(target=self._watch, args=(path, proc), daemon=True, name="background-build-watch").start()
            return True

    def _watch(self, path: str, proc: subprocess.Popen) -> None:
        start = time.time()
        code = proc.wait()
        with self._lock:
            self._running.pop(path, None)
            if code == 0 and os.path.exists(path):
                logger.info(f"Built in the background: {os.path.basename(path)} ({time.time() - start:.0f}s)")
                _remove(f"{path}.log")
                return
            self.failed[path] = _last_line(f"{path}.log") or f"exit code {code}"
        logger.warning(f"Building {os.path.basename(path)} failed ({self.failed[path]}); auto stays on PyTorch "
                       f"(log: {path}.log)")

    def wait(self, path: str, timeout: float | None = None) -> bool:
        """Wait for a running build of ``path``; True if the file exists afterwards."""
        with self._lock:
            proc = self._running.get(path)
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            deadline = time.time() + 5  # let the watcher record the outcome
            while time.time() < deadline:
                with self._lock:
                    if path not in self._running:
                        break
                time.sleep(0.05)
        return os.path.exists(path)

    def running(self, path: str) -> bool:
        with self._lock:
            proc = self._running.get(path)
            return proc is not None and proc.poll() is None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1][:300] if lines else ""
    except OSError:
        return ""


def builder_parser(description: str) -> argparse.ArgumentParser:
    """The arguments :meth:`BackgroundBuilds.start` passes to a builder process (this one, and OpenVINO's)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--weights", required=True, help="checkpoint (.pt)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--arch_file", default=None, help="architecture code (needed for bare bundle state dicts)")
    p.add_argument("--channel_mul", type=float, default=0.25)
    p.add_argument("--network", default="dints", help="dints or unet")
    p.add_argument("--num_classes", type=int, default=3, help="output classes (background + labels)")
    p.add_argument("--in_channels", type=int, default=1, help="input channels (1 + classes for an interactive network)")
    p.add_argument("--network_options", default="", help="UNet arguments of a bundle's network_def (JSON)")
    p.add_argument("--roi_size", type=int, nargs=3, default=(96, 96, 96))
    p.add_argument("--batch", type=int, default=2, help="sliding-window batch the file is built for")
    return p


def builder_network(args) -> torch.nn.Module:
    """The network a builder process's arguments name, loaded from its weights."""
    from lib.networks.factory import NetworkSpec, options_tuple

    options = options_tuple(json.loads(args.network_options)) if args.network_options else ()
    net, _ = NetworkSpec(args.network, args.num_classes, args.channel_mul, args.arch_file, args.in_channels,
                         options).load(args.weights)
    return net


def run_builder(build: Callable[[], None], out: str) -> int:
    """A builder process's outcome for the server: one line, exit code 0 or 1 (the traceback is not for annotators)."""
    start = time.time()
    try:
        build()
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", flush=True)
        return 1
    print(f"wrote {out} in {time.time() - start:.0f}s", flush=True)
    return 0


def main(argv=None) -> int:
    args = builder_parser("Build the AOTInductor CPU package of a checkpoint.").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def build():
        check_cpu_compiler()
        build_package(builder_network(args), args.out, args.roi_size, args.batch, weights_path=args.weights)

    return run_builder(build, args.out)


if __name__ == "__main__":
    sys.exit(main())
