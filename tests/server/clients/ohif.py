"""The stock OHIF v3 MONAI Label panel (MONAI Label 0.8.5) as the server sees it.

Transcribed from ``plugins/ohifv3/extensions/monai-label/src`` at tag 0.8.5 of Project-MONAI/MONAILabel, the source
of the build MONAI Label 0.8.5 serves at ``/ohif`` (``monailabel/endpoints/static/ohif``, its ``3933.bundle.*.js``
holds the same code, unminified); each docstring names the file and function. The panel's client
(``services/MonaiLabelClient.js``, axios) is :class:`PanelClient`, with ``requests``; the panel's state (the
labels it built on connect, the segmentation's labelmap, the clicks per label) is :class:`OHIFPanel`.

OHIF's viewer is replaced by: the segmentation ``'1'`` as a uint8 array on the volume's voxel grid (IJK, as the
NRRD answer is read), its segments ``{label: segmentIndex}``, and clicks given as voxel indices (the panel rounds
``worldToIndex`` of each probe). Not transcribed: vista3d and 2-D models, Next Sample's form, saving a label,
the options dialog (its values can be set in :attr:`OHIFPanel.options`). Where the panel shows an error
notification the emulator raises :class:`OHIFError`.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urljoin

import numpy as np
import requests


class OHIFError(RuntimeError):
    def __init__(self, message: str, response: requests.Response):
        super().__init__(f"{message} (HTTP {response.status_code}: {response.text[:300]})")
        self.response = response


class PanelClient:
    """``services/MonaiLabelClient.js``: URLs resolved against the server URL as ``new URL(path, server_url)`` does;
    errors are returned, not raised (axios ``.catch(error => error)``)."""

    def __init__(self, server_url: str, headers: dict | None = None):
        self.server_url = server_url
        # not the panel's: what a reverse proxy in front of the server adds (e.g. the logged-in user's token)
        self.headers = dict(headers or {})

    def _url(self, path: str) -> str:
        return urljoin(self.server_url, path)

    def info(self) -> requests.Response:
        """``info()``: ``GET info/``."""
        return requests.get(self._url("info/"), headers=self.headers, timeout=60)

    def infer(self, model: str, image: str, params: dict, result_extension: str = ".nrrd",
              output: str = "image") -> requests.Response:
        """``infer()``: ``POST infer/<model>?image=...&output=image`` with a multipart form holding only ``params``
        (JSON), asking for an uncompressed 8-bit NRRD with the model's own label values."""
        url = self._url("infer/" + quote(model, safe="")) + "?" + f"image={quote(image, safe='')}&output={output}"
        if result_extension:
            params["result_extension"] = result_extension
            params["result_dtype"] = "uint8"
            params["result_compress"] = False
        params["restore_label_idx"] = False
        return requests.post(url, files={"params": (None, json.dumps(params))}, timeout=600,
                             headers={**self.headers, "accept": "application/json,multipart/form-data"})

    def next_sample(self, strategy: str = "random", params: dict | None = None) -> requests.Response:
        """``next_sample()``: ``POST activelearning/<strategy>`` with the params as JSON."""
        return requests.post(self._url("activelearning/" + quote(strategy, safe="")), json=params or {},
                             headers=self.headers, timeout=60)

    def is_train_running(self) -> bool:
        """``is_train_running()``: ``GET train/?check_if_running=true``."""
        response = requests.get(self._url("train/") + "?check_if_running=true", headers=self.headers, timeout=60)
        return response.status_code == 200 and response.json().get("status") == "RUNNING"

    def run_train(self, params: dict) -> requests.Response:
        """``run_train()``: ``POST train/`` (no model: every trainer, as the server decides) with the params as JSON."""
        return requests.post(self._url("train/"), json=params, headers=self.headers, timeout=60)

    def stop_train(self) -> requests.Response:
        """``stop_train()``: ``DELETE train/``."""
        return requests.delete(self._url("train/"), headers=self.headers, timeout=60)


class OHIFPanel:
    """``components/MonaiLabelPanel.tsx`` and its action tabs, for one volume."""

    def __init__(self, server_url: str, shape: tuple[int, int, int], headers: dict | None = None):
        self.client = PanelClient(server_url, headers)
        self.labelmap = np.zeros(shape, np.uint8)  # segmentation '1'
        self.segments: dict[str, int] = {}  # label -> segmentIndex
        self.info: dict = {}
        self.options: dict = {}  # the options dialog ("infer" / "train" / "activelearning" sections)
        self.click_points: dict[str, list] = {}  # PointPrompts state.clickPoints, keyed by label name ("null": none)
        self.current_label: str | None = None
        self.current_model: str | None = None
        self.training = False

    # -- connect -----------------------------------------------------------------------------------------
    def connect(self) -> dict:
        """``onInfo`` (MonaiLabelPanel.tsx): ``GET info/``; the segment list is /info's ``labels`` plus every
        deepgrow/deepedit/vista3d/segmentation model's label names, de-duplicated and sorted alphabetically, as
        segment indices 1..n; per model a label -> value map (a dict's values, a list's positions from 1)."""
        response = self.client.info()
        if response.status_code != 200:
            raise OHIFError("Failed to Connect to MONAI Label", response)
        data = response.json()
        all_models = data["models"]
        models = [m for kind in ("deepgrow", "deepedit", "vista3d", "segmentation")
                  for m in all_models if all_models[m]["type"] == kind]
        all_labels = list(data["labels"])  # the panel pushes onto it: a dict here breaks the panel
        to_idx: dict[str, dict[str, int]] = {}
        for model in models:
            labels = all_models[model]["labels"]
            pairs = list(enumerate(labels, 1)) if isinstance(labels, list) else [(v, k) for k, v in labels.items()]
            to_idx[model] = {label: idx for idx, label in pairs}
            all_labels += [label for _, label in pairs]
        ordered = sorted(set(all_labels))
        self.segments = {label: index + 1 for index, label in enumerate(ordered)}
        self.info = {"models": models, "labels": ordered, "data": data, "modelLabelToIdxMap": to_idx,
                     "modelLabelNames": {m: sorted(to_idx[m]) for m in models}}
        self.options = {}
        return self.info

    def _model(self, types: tuple[str, ...], current: str | None) -> str:
        """The tabs' ``getModels`` + selection: the chosen model, else the first of the tab's types."""
        models = [m for m in self.info["data"]["models"] if self.info["data"]["models"][m]["type"] in types]
        return current if current in models else (models[0] if models else None)

    def _params(self, model: str) -> dict:
        infer = (self.options or {}).get("infer") or {}
        return dict(infer.get(model) or {})

    # -- Auto Segmentation ---------------------------------------------------------------------------------
    def run(self, image: str, model: str | None = None) -> np.ndarray:
        """``onSegmentation`` (actions/AutoSegmentation.tsx): ``infer`` of the selected segmentation model with the
        options' params; the answer shown by :meth:`update_view` with the model's label names."""
        model = self._model(("segmentation", "vista3d"), model)
        if model is None:
            raise RuntimeError("Something went wrong: Model is not selected")
        if self.info["data"]["models"][model]["type"] == "vista3d":
            raise NotImplementedError("vista3d is not transcribed")
        response = self.client.infer(model, image, self._params(model))
        if response.status_code != 200:
            raise OHIFError("Failed to Run Segmentation", response)
        return self.update_view(response.content, model, self.info["modelLabelNames"][model])

    # -- Point Prompts -------------------------------------------------------------------------------------
    def change_label(self, name: str | None) -> None:
        """``onChangeLabel`` (actions/PointPrompts.tsx): the points shown belong to the label chosen; none chosen
        is ``null``."""
        self.current_label = name

    def add_point(self, ijk) -> None:
        """A ``ProbeMONAILabel`` point placed on the volume, kept under the current label (``"null"`` when no organ
        was chosen: the panel files the annotations under ``clickPoints[currentLabel]``, a JavaScript object key)."""
        key = "null" if self.current_label is None else self.current_label
        self.click_points.setdefault(key, []).append([int(round(c)) for c in ijk])

    def select_model(self, model: str) -> None:
        """``onSelectModel`` (actions/PointPrompts.tsx): no label chosen, every point cleared."""
        self.current_model, self.current_label, self.click_points = model, None, {}

    def point_prompts(self, image: str, model: str | None = None) -> tuple[dict, np.ndarray]:
        """``onRunInference`` (actions/PointPrompts.tsx): every label's points by name; a ``deepedit`` model gets
        ``background: []`` and then one key per label that has points (``"null"`` included), a deepgrow model
        ``foreground`` (the current label's) and ``background``. Returns the params sent and the updated view."""
        model = self._model(("deepgrow", "deepedit", "vista3d"), model or self.current_model)
        if model is None:
            raise RuntimeError("Something went wrong: Model is not selected")
        kind = self.info["data"]["models"][model]["type"]
        if kind == "vista3d" or self.info["data"]["models"][model].get("dimension") == 2:
            raise NotImplementedError("vista3d and 2-D models are not transcribed")
        current = "null" if self.current_label is None else self.current_label
        clicks = dict(self.click_points)
        clicks.setdefault(current, [])  # clickPoints[currentLabel] = manager.saveAnnotations(...)
        points = {label: list(p) for label, p in clicks.items() if p}  # set only where annotations were saved
        label_names = list(clicks)
        params = self._params(model)
        if kind == "deepedit":
            params["background"] = []
            params.update(points)
        else:
            params["foreground"] = points.get(current)
            params["background"] = points.get("background") or []
            label_names = [current]
        sent = dict(params)
        response = self.client.infer(model, image, params)
        if response.status_code != 200:
            raise OHIFError("Failed to Run Inference for Point Prompts", response)
        view = self.update_view(response.content, model, label_names, override=True,
                                label_class_unknown=kind == "deepgrow")
        return sent, view

    # -- the view ------------------------------------------------------------------------------------------
    def update_view(self, nrrd_bytes: bytes, model: str, labels: list[str], override: bool = False,
                    label_class_unknown: bool = False) -> np.ndarray:
        """``updateView`` (MonaiLabelPanel.tsx) for a 3-D answer: each label is given its segment index (a free one
        when it has no segment), the model's value of each label (its map, else the label's position in
        ``labels`` from 1) becomes that index; values of no listed label become 0. ``override`` (clicks): only the
        voxels whose current segment is one of the new values are replaced."""
        data = _read_nrrd_bytes(nrrd_bytes).astype(np.uint8)
        mapping = {0: 0}
        for position, label in enumerate(labels, 1):
            if label not in self.segments:
                self.segments[label] = next(i for i in range(1, 256) if i not in self.segments.values())
            model_idx = self.info["modelLabelToIdxMap"][model].get(label) or position
            mapping[model_idx] = 0xFF & self.segments[label]
        lut = np.zeros(256, np.int16) - 1  # -1: no mapping
        for midx, sidx in mapping.items():
            lut[midx] = sidx
        mapped = lut[data]
        converted = data.copy()
        hit = (data > 0) & (mapped > 0)
        converted[hit] = mapped[hit].astype(np.uint8)
        rest = ~hit
        if override and label_class_unknown and len(labels) == 1:
            converted[rest] = np.where(data[rest] > 0, self.segments[labels[0]], 0)
        elif labels:
            converted[rest] = 0
        if override:
            targets = np.unique(converted)
            replace = (converted != 255) & np.isin(self.labelmap, targets)
            current = self.labelmap.copy()
            current[replace] = converted[replace]
            converted = current
        self.labelmap = converted
        return converted

    # -- Active Learning -------------------------------------------------------------------------------------
    def update_model(self) -> requests.Response:
        """``onClickUpdateModel`` (actions/ActiveLearning.tsx): ``POST train/`` with the options' whole ``train``
        section (``{}`` by default), no model named; ``DELETE train/`` while the panel thinks training runs. The
        panel reads that state once, from ``GET train/?check_if_running=true`` (``componentDidMount``)."""
        config = self.options or {}
        params = config.get("train") or {}
        response = self.client.stop_train() if self.training else self.client.run_train(params)
        if response.status_code != 200:
            raise OHIFError("Failed to Update Model" if not self.training else "Failed to Stop Training", response)
        self.training = not self.training
        return response


def _read_nrrd_bytes(content: bytes) -> np.ndarray:
    """``SegmentationReader.parseNrrdData``: the NRRD answer's voxels (IJK)."""
    import os
    import tempfile

    import nrrd

    fd, path = tempfile.mkstemp(suffix=".nrrd")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        data, _ = nrrd.read(path)
    finally:
        os.unlink(path)
    return data
