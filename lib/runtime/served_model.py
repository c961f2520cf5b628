"""The model a task serves, shared by the infer tasks and scoring: one lifecycle, written once.

* **weights version**: MONAI Label's rule, the last existing path of the list wins (a model published by
  training replaces the shipped one), identified by (path, mtime, size);
* **checksum**: ``file_checksum`` of that file, hashed once per version (not on every request and ``/info``);
* **network per device**: rebuilt whenever the version changes, so hot reload needs no restart;
* **prepared backends**: the network on ``torch``/``compile``/``aot``/``openvino``/``tensorrt``
  (:mod:`lib.runtime.backends`), and on the CPU with ``background_compile`` a faster form built in a low-priority
  process, used by ``auto`` once it is there: the OpenVINO model where the ``openvino`` package is installed
  (converted, compiled and run once in that process, so a fault there cannot end the server), else the
  AOTInductor package.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Sequence

import torch

from lib.errors import InputError
from lib.networks.arch_code import ArchCodeError
from lib.networks.factory import CheckpointError, NetworkSpec, file_checksum
from lib.runtime.aot_package import BackgroundBuilds, aot_package_path
from lib.runtime.backends import BackendOptions, ModelCache, PreparedModel, normalise_backend, prepare, resolve_backend
from lib.runtime.openvino_backend import model_path, openvino_installed, openvino_precision
from lib.runtime.reduced_precision import cpu_bf16_flags

logger = logging.getLogger(__name__)


def current_weights(weights: Sequence[str]) -> str | None:
    """The last existing path of ``weights`` (a trained model replaces the shipped one), or None."""
    for path in reversed(list(weights)):
        if path and os.path.exists(path):
            return path
    return None


class ServedModel:
    def __init__(self, weights: Sequence[str], spec: NetworkSpec, backend_options: BackendOptions | None = None,
                 background_compile: bool = False):
        self.weights = list(weights)
        self.spec = spec
        self.backend_options = backend_options or BackendOptions()
        self.background_compile = bool(background_compile)
        self._lock = threading.RLock()  # held while a network loads: concurrent first requests load it once
        self._networks: dict[str, tuple[tuple, torch.nn.Module, dict]] = {}  # device -> (version, network, meta)
        self._checksums: dict[tuple, str] = {}  # version -> checksum
        self._models = ModelCache()
        self._builds = BackgroundBuilds()

    # ---- identity ----------------------------------------------------------------------------------------
    def path(self) -> str | None:
        return current_weights(self.weights)

    @staticmethod
    def version(path: str) -> tuple:
        st = os.stat(path)
        return (path, st.st_mtime_ns, st.st_size)

    def checksum(self, path: str | None = None) -> str | None:
        """Checksum of the current weights (None when there are none); the model identity in /info and scores."""
        path = path or self.path()
        if path is None:
            return None
        try:
            key = self.version(path)
        except FileNotFoundError:
            return None
        with self._lock:
            if key not in self._checksums:
                self._checksums.clear()
                self._checksums[key] = file_checksum(path)
            return self._checksums[key]

    def info(self) -> dict:
        path = self.path()
        return {"path": os.path.basename(path) if path else None, "checksum": self.checksum(path) if path else None,
                "network": self.spec.network}

    # ---- the network -------------------------------------------------------------------------------------
    def network(self, device) -> torch.nn.Module:
        """The eval-mode network of the current weights on ``device``; InputError 503 when there is none usable."""
        path = self.path()
        if not path:
            raise InputError(f"no model weights found (looked for {', '.join(self.weights)}); "
                             "train the model or install weights", 503)
        key = self.version(path)
        device = str(device)
        with self._lock:
            cached = self._networks.get(device)
            if cached and cached[0] == key:
                return cached[1]
            try:
                net, meta = self.spec.load(path)
            except (CheckpointError, ArchCodeError) as exc:
                raise InputError(f"the model cannot be loaded: {exc}", 503) from exc
            net = net.to(device).eval()
            self._networks[device] = (key, net, meta)
            logger.info(f"Loaded {os.path.basename(path)} ({self.checksum(path)}) on {device}")
            return net

    def cpu_package(self, device, backend: str) -> str | None:
        """The compiled package ``auto`` switches to (CPU, ``background_compile``) for the current weights, else None."""
        if not (backend == "auto" and self.background_compile and resolve_backend("auto", device) == "torch"):
            return None
        path = self.path()
        return aot_package_path(path, self.checksum(path), self.backend_options) if path else None

    def cpu_openvino(self, device, backend: str) -> str | None:
        """The converted OpenVINO model ``auto`` switches to (CPU, ``background_compile``, the ``openvino`` package
        installed) for the current weights, else None."""
        if not (backend == "auto" and self.background_compile and resolve_backend("auto", device) == "torch"
                and openvino_installed()):
            return None
        path = self.path()
        return model_path(path, self.checksum(path), self.backend_options, self.spec.in_channels) if path else None

    def cpu_bf16(self, device, backend: str) -> bool:
        """Whether ``auto`` tries bf16 first here: the CPU, ``cpu_precision auto``, calibration images to gate it on and
        native bf16 on this CPU."""
        opts = self.backend_options
        return (backend == "auto" and resolve_backend("auto", device) == "torch" and opts.cpu_precision == "auto"
                and opts.calibration is not None and bool(cpu_bf16_flags()))

    def prepared(self, device, backend: str) -> PreparedModel:
        """The network on ``backend``, built once per weights version and device.

        ``auto`` on the CPU, in this order: with ``background_compile`` and the ``openvino`` package, the OpenVINO
        model once the background process has converted it and run it on this CPU (its conversion started here
        otherwise); bf16 where the CPU has it and its gate passes (:mod:`lib.runtime.reduced_precision`); with
        ``background_compile``, where no OpenVINO model is coming, the AOTInductor package once it exists for these
        weights, eager ``torch`` until then, with the package's build started in the background."""
        backend = normalise_backend(backend)
        net = self.network(device)  # reloads on a weights change; raises InputError if unusable
        with self._lock:
            key = self._networks[str(device)][0]
        path, checksum = key[0], self.checksum(key[0])
        requested, note = backend, None
        converted = self.cpu_openvino(device, backend)
        if converted:
            if os.path.exists(converted):  # converted and run on this CPU by the background process
                ov = self._models.get((key, "openvino", str(device)), lambda: prepare(
                    net, "openvino", str(device), self.backend_options, weights_path=path, checksum=checksum))
                if ov.backend == "openvino":
                    return dataclasses.replace(ov, requested=requested)
                note = ov.fallback_reason
            else:
                opts = self.backend_options
                self._builds.start(converted, path, self.spec, opts.roi_size, opts.sw_batch_size,
                                   module="lib.runtime.openvino_backend",
                                   extra=["--precision", openvino_precision(opts), "--threads", str(torch.get_num_threads())])
                note = (f"openvino: {self._builds.failed[converted]}" if converted in self._builds.failed
                        else "OpenVINO model converting in the background")
        if self.cpu_bf16(device, backend):
            bf16 = self._models.get((key, "bf16", str(device)), lambda: prepare(
                net, "bf16", str(device), self.backend_options, weights_path=path, checksum=checksum))
            if bf16.backend == "bf16":
                info = {**bf16.info, "note": "; ".join(filter(None, [note, bf16.info.get("note")]))}
                return dataclasses.replace(bf16, requested=requested, info=info)
            # the gate failed or bf16 is unavailable: the fp32 path, saying why
            note = "; ".join(filter(None, [note, f"fp32: {bf16.fallback_reason}"]))
        # the compiled package only where no OpenVINO model is coming (its conversion failed, or no package)
        package = self.cpu_package(device, backend) if not converted or converted in self._builds.failed else None
        if package:
            if os.path.exists(package):
                backend = "aot"
            else:
                backend = "torch"
                self._builds.start(package, path, self.spec, self.backend_options.roi_size, self.backend_options.sw_batch_size)
                note = "; ".join(filter(None, [note, self._builds.failed.get(package)
                                               or "compiled package building in the background"]))
        prepared = self._models.get(
            (key, backend, str(device)),
            lambda: prepare(net, backend, str(device), self.backend_options, weights_path=path, checksum=checksum),
        )
        if requested != prepared.requested or note:
            prepared = dataclasses.replace(prepared, requested=requested,
                                           info={**prepared.info, "note": note} if note else prepared.info)
        return prepared

    def warm_up(self, device: str, backend: str, wait: bool = False, timeout: float | None = None) -> PreparedModel | None:
        """Load the network; for CPU ``auto`` with ``background_compile`` also start converting or building its faster
        form and return what ``auto`` runs now. ``wait``: first let that build end (or ``timeout`` pass)."""
        self.network(device)
        converted = self.cpu_openvino(device, backend)
        if converted:
            prepared = self.prepared(device, "auto")  # starts the conversion when it is not there yet
            if wait:
                self._builds.wait(converted, timeout)
                prepared = self.prepared(device, "auto")
            if prepared.backend == "openvino" or converted not in self._builds.failed:
                return prepared  # OpenVINO, or what auto runs until its conversion ends
        if self.cpu_bf16(device, backend):
            prepared = self.prepared(device, "auto")  # the gate runs now (seconds, once per weights and CPU)
            if prepared.backend == "bf16":
                return prepared
        package = self.cpu_package(device, backend)
        if package is None:
            return None
        prepared = self.prepared(device, "auto")
        if wait:
            self._builds.wait(package, timeout)
            prepared = self.prepared(device, "auto")
        return prepared
