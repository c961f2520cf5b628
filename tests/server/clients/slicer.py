"""The stock 3D Slicer MONAI Label module, version 0.8.5, as the server sees it.

Each step transcribes the request logic of ``plugins/slicer/MONAILabel/MONAILabel.py`` at tag 0.8.5 of
Project-MONAI/MONAILabel (its docstring gives the function and the lines of that file), through the client the
module's logic class uses, ``MONAILabelClient`` (the module's ``MONAILabelLib/client.py`` is
``monailabel.client`` of the same release), made afresh for every call with the logic's own ``tmpdir``.

Slicer's scene is replaced by:

* the segmentation node: an ordered list of :class:`Segment` (name, boolean mask on the volume's voxel grid).
  The module makes its segments with ``AddEmptySegment(label, label, color)``, so a segment's ID is its name;
* ``ImportLabelmapToSegmentationNode(labelmap, node, ids)``: file value ``v`` replaces segment ``ids[v-1]``
  (made at the end of the list when there is none);
* ``ExportSegmentsToLabelmapNode(node, ids, labelmap, volume)``: the listed segments as the consecutive values
  1..n in list order, a later segment over an earlier one (:func:`export_labelmap`);
* ``slicer.util.saveNode``: a labelmap as NIfTI or NRRD on the volume's geometry (:func:`write_labelmap`), the
  segmentation node as a ``.seg.nrrd`` (:func:`write_seg_nrrd`);
* the Segment Editor (not part of the module): :meth:`StockSlicer.paint` and :meth:`StockSlicer.erase`.

* the ROI widgets (the SmartEdit section's "SAM2 ROI" and the Scribbles section's "Scribbles ROI"): an axis-aligned
  box in RAS, centre and size (:meth:`StockSlicer.place_roi` places one over a box of voxel indices);
* the scribbles: the segments ``background_scribbles`` and ``foreground_scribbles`` painted with the editor's
  ``OverwriteNone`` (:meth:`StockSlicer.scribble`).

Not transcribed: the GUI and progress bars, 2-D models, detection models, sessions
(volumes loaded from the local disk), loading a ``.seg.nrrd`` or ``.json`` result, and Slicer's resampling of a
labelmap on another grid (refused here). Where the module shows an error dialog the emulator raises.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from urllib.parse import quote_plus

import nibabel as nib
import numpy as np
import requests
from monailabel.client import MONAILabelClient

SKIPPED_ON_SAVE = ["background", "foreground_scribbles", "background_scribbles"]
SCRIBBLES = ["foreground_scribbles", "background_scribbles"]
FOREGROUND_TAG, BACKGROUND_TAG = "MONAILabel.ForegroundPoints", "MONAILabel.BackgroundPoints"
# MONAILabelLib/labelcolors.py GenericAnatomyColors, the entries of this task's names ("tumor" has none)
COLORS = {"background": (0, 0, 0), "pancreas": (249, 180, 111)}
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Segment:
    name: str  # also its ID
    mask: np.ndarray  # bool, on the volume's voxel grid (i, j, k)
    tags: dict[str, str] = field(default_factory=dict)  # the module keeps each segment's clicks here (JSON)


# ---- Slicer's segmentation logic ------------------------------------------------------------------------
def export_labelmap(segments: list[Segment], ids: list[str]) -> np.ndarray:
    """``ExportSegmentsToLabelmapNode(node, ids, labelmap, volume)``: segment ``ids[i]`` is value ``i + 1``, a
    later one over an earlier one where they overlap; 16-bit, as the module then saves it."""
    out = np.zeros(segments[0].mask.shape, np.int16)
    for value, segment_id in enumerate(ids, 1):
        out[next(s for s in segments if s.name == segment_id).mask] = value
    return out


def _lps_header(affine: np.ndarray, sizes) -> dict:
    lps = _LPS @ np.asarray(affine, dtype=np.float64)[:3]
    return {"space": "left-posterior-superior", "sizes": list(sizes), "space directions": lps[:, :3].T,
            "space origin": lps[:, 3], "kinds": ["domain"] * 3, "encoding": "gzip"}


def write_labelmap(path: str, labelmap: np.ndarray, affine: np.ndarray) -> None:
    """``saveNode(labelmapVolumeNode, path)``: NIfTI for ``.nii``/``.nii.gz``, else NRRD (also a ``.seg.nrrd``
    name: a labelmap node is written as a plain volume whatever the name)."""
    if path.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(labelmap, affine), path)
        return
    import nrrd

    nrrd.write(path, labelmap, {"type": "short", "dimension": 3, **_lps_header(affine, labelmap.shape)})


def collapse_layers(segments: list[Segment]) -> list[tuple[int, int]]:
    """(layer, label value) of each segment: each goes into the first layer where it overlaps no other segment
    (a new layer when there is none) and takes the next value of that layer, as Slicer's shared labelmaps do."""
    used: list[np.ndarray] = []
    count: list[int] = []
    out = []
    for segment in segments:
        layer = next((i for i, u in enumerate(used) if not (u & segment.mask).any()), len(used))
        if layer == len(used):
            used.append(np.zeros(segment.mask.shape, bool))
            count.append(0)
        used[layer] |= segment.mask
        count[layer] += 1
        out.append((layer, count[layer]))
    return out


def _extent(mask: np.ndarray) -> str:
    found = np.argwhere(mask)
    if not len(found):
        return "0 -1 0 -1 0 -1"
    lo, hi = found.min(0), found.max(0)
    return " ".join(f"{a} {b}" for a, b in zip(lo, hi))


def write_seg_nrrd(path: str, segments: list[Segment], affine: np.ndarray) -> None:
    """``saveNode(segmentationNode, path)`` of a ``.seg.nrrd``: every segment of the node (background and scribbles
    included) in its layer with its label value (:func:`collapse_layers`), the reference volume's full extent; a
    3-D file when all share one layer, else 4-D with the layers first (kind ``list``, no space direction)."""
    import nrrd

    places = collapse_layers(segments)
    n_layers = max((layer for layer, _ in places), default=0) + 1
    shape = segments[0].mask.shape
    layers = np.zeros((n_layers, *shape), np.uint8)
    for segment, (layer, value) in zip(segments, places):
        layers[layer][segment.mask] = value
    header = _lps_header(affine, shape)
    if n_layers > 1:
        header.update(sizes=[n_layers, *shape], kinds=["list", "domain", "domain", "domain"],
                      **{"space directions": np.vstack([np.full(3, np.nan), header["space directions"]])})
    header.update({"type": "unsigned char", "dimension": len(header["sizes"]),
                   "Segmentation_MasterRepresentation": "Binary labelmap",
                   "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                   "Segmentation_ReferenceImageExtentOffset": "0 0 0"})
    for n, (segment, (layer, value)) in enumerate(zip(segments, places)):
        color = COLORS.get(segment.name.lower())
        header.update({f"Segment{n}_ID": segment.name, f"Segment{n}_Name": segment.name,
                       f"Segment{n}_NameAutoGenerated": "0",
                       f"Segment{n}_Color": " ".join(f"{c / 255:.6g}" for c in (color or (128, 128, 128))),
                       f"Segment{n}_ColorAutoGenerated": "0" if color else "1",
                       f"Segment{n}_Extent": _extent(segment.mask), f"Segment{n}_LabelValue": str(value),
                       f"Segment{n}_Layer": str(layer), f"Segment{n}_Tags": "|"})
    nrrd.write(path, layers if n_layers > 1 else layers[0], header)


# ---- the module ----------------------------------------------------------------------------------------
class StockSlicer:
    """One Slicer with the stock MONAI Label module, its settings (File Extension, Allow Overlapping
    Segmentations, original label, auto-segmentation on Next Sample) and one scene."""

    def __init__(self, server_url: str, tmpdir, *, file_ext: str = ".nii.gz", allow_overlap: bool = True,
                 client_id: str = "user-xyz", original_label: bool = True, auto_segment: bool = True,
                 username: str | None = None, password: str | None = None):
        self.server_url = server_url.rstrip("/")
        self.tmpdir = str(tmpdir)
        self.file_ext, self.allow_overlap, self.client_id = file_ext, allow_overlap, client_id
        self.original_label, self.auto_segment = original_label, auto_segment
        self.username, self.password, self.auth_token = username, password, None
        self.info: dict = {}
        self.models: dict = {}
        self.volume: nib.Nifti1Image | None = None
        self.segments: list[Segment] | None = None  # the segmentation node (None: not made yet)
        self.current_sample: dict | None = None
        self.samples: dict = {}
        self.current_label = ""  # the parameter node's CurrentLabel
        self.reset_label_state = False
        self.segmentation_model = self.deepgrow_model = self.strategy = self.trainer = ""  # selectors: "" = first
        self.freeze = False  # "Freeze" check box of DeepEdit
        self.scribbles_model = ""  # scribblesMethodSelector: "" = first
        self.scribbles_label = ""  # scribLabelComboBox: "" = first
        self.sam2_roi: tuple[np.ndarray, np.ndarray] | None = None  # SAM2 ROI node (RAS centre, size), placed
        self.scribbles_roi: tuple[np.ndarray, np.ndarray] | None = None  # Scribbles ROI node
        self.last_infer: tuple[str, dict] | None = None  # (model, params) of the last infer request

    # -- logic ------------------------------------------------------------------------------------------
    def _client(self) -> MONAILabelClient:
        """``MONAILabelLogic._client`` (lines 2324-2347): a new client per call; a token where auth is on (the
        module asks for the password in a dialog: here ``username``/``password``)."""
        mc = MONAILabelClient(self.server_url, self.tmpdir, self.client_id)
        if mc.auth_enabled():
            if self.auth_token:
                mc.update_auth(self.auth_token)
            if not self.auth_token or not mc.auth_valid_token():
                try:
                    self.auth_token = mc.auth_token(self.username, self.password)
                    mc.update_auth(self.auth_token)
                except Exception:
                    self.username = self.password = self.auth_token = None
        return mc

    def _infer(self, model: str, image_in: str, params: dict, label_in: str | None = None) -> tuple[str, dict]:
        """``MONAILabelLogic.infer`` (lines 2376-2389): asks for an 8-bit ``.nrrd`` result; ``label_in`` is uploaded
        with the request (the scribbles)."""
        params["result_extension"] = ".nrrd"
        params["result_dtype"] = "uint8"
        self.last_infer = (model, dict(params))
        return self._client().infer(model, image_in, params, label_in, None, None)

    # -- widget -----------------------------------------------------------------------------------------
    def fetch_info(self) -> dict:
        """``fetchInfo`` (lines 1093-1145): ``/info``; every model is kept, by name, in the server's order."""
        info = self._client().info()
        self.info = info
        if info.get("config"):
            raise RuntimeError("Please upgrade the monai server to latest version")
        self.models = dict(info.get("models", {}))
        return info

    def params_from_config(self, section: str, name: str) -> dict:
        """``getParamsFromConfig`` (lines 892-900): the section's ``config`` of ``name``, a list as its first item."""
        section = {"infer": "models", "train": "trainers", "activelearning": "strategies", "scoring": "scoring"}.get(section, section)
        config = self.info.get(section, {}).get(name, {}).get("config", {})
        return {k: v[0] if isinstance(v, list) else v for k, v in config.items()}

    def _selected(self, types: tuple[str, ...], chosen: str) -> str:
        """``updateSelector`` (lines 749-769): the models of these types; the chosen one, else the first."""
        names = [n for n, m in self.models.items() if m["type"] in types]
        return chosen if chosen in names else (names[0] if names else "")

    def _segment(self, segment_id: str) -> Segment | None:
        return next((s for s in self.segments if s.name == segment_id), None)

    def label_items(self) -> list[str]:
        """``labelComboBox`` (lines 574-595): the node's segments but scribbles, or /info's labels before a node."""
        if self.segments is not None:
            return [s.name for s in self.segments if s.name not in SCRIBBLES]
        return list(self.info.get("labels", []))

    def select_label(self, name: str) -> None:
        """``onSelectLabel`` -> ``updateParameterNodeFromGUI`` (lines 1005-1011, 737-744): another label than the
        one before resets the interactive model's state on the next click."""
        if self.current_label and self.current_label != name:
            self.reset_label_state = True
        self.current_label = name

    def next_sample(self, strategy: str | None = None) -> dict | None:
        """``onNextSampleButton`` (lines 1242-1341): a new scene; ``POST /activelearning/<strategy>`` with the
        strategy's config; the image downloaded from ``/datastore/image`` (``SampleDataLogic.downloadFromURL``:
        no auth header); the "original" label downloaded and imported, then :meth:`init_sample`.

        The import of the original label goes to ``self._segmentNode``, which the new scene has cleared and
        :meth:`init_sample` only makes afterwards: in 0.8.5 it fails and the bare ``except`` hides it
        ("Original label not found ..."). The emulator does the same."""
        if self.volume is not None:  # slicer.mrmlScene.Clear(0) -> onSceneStartClose (lines 416-447)
            self.volume, self.segments, self.current_sample, self.samples = None, None, None, {}
        strategy = strategy or self.strategy or next(iter(self.info.get("strategies", {})), "")
        if not strategy:
            raise RuntimeError("No Strategy Found/Selected")
        sample = self._client().next_sample(strategy, self.params_from_config("activelearning", strategy))
        if not sample.get("id"):
            return None
        image_id = sample["id"]
        image_name = sample.get("name", image_id)
        response = requests.get(f"{self.server_url}/datastore/image?image={quote_plus(image_id)}", timeout=120)
        response.raise_for_status()
        local = os.path.join(self.tmpdir, os.path.basename(image_name))
        with open(local, "wb") as f:
            f.write(response.content)
        self.volume = nib.load(local)
        if self.original_label:
            try:
                datastore = self._client().datastore()
                label_info = datastore["objects"][image_id]["labels"]["original"]["info"]
                labels = label_info.get("params", {}).get("label_names", {})
                labels = labels.keys() if labels else self._client().info().get("labels")
                mask_file = self._client().download_label(image_id, "original")
                self.update_segmentation_mask(mask_file, list(labels))
            except Exception:  # the module: bare except, "Original label not found ..."
                pass
        self.init_sample(sample)
        return sample

    def init_sample(self, sample: dict, autosegment: bool = True) -> None:
        """``initSample`` (lines 1343-1378): the segmentation node, one empty segment per /info label in /info's
        order, then the first segmentation model that has one of /info's labels (in /info's order) is run."""
        self.current_sample = sample
        self.samples[sample["id"]] = sample
        if self.segments is None:  # createSegmentNode
            self.segments = []
        if self.info.get("labels"):
            self.update_segmentation_mask(None, self.info.get("labels"))
        if autosegment and self.auto_segment:
            for label in self.info.get("labels", []):
                for name, model in self.models.items():
                    if label in model.get("labels", []):
                        # segmentationModelSelector.currentText = name: a combo box of segmentation models only
                        # keeps its current item when the name is not one of them
                        if name in [n for n, m in self.models.items() if m["type"] in ("segmentation", "detection")]:
                            self.segmentation_model = name
                        self.segmentation()
                        return

    def segmentation(self) -> None:
        """``onClickSegmentation`` (lines 1550-1586): ``/infer/<model>`` of the sample with the model's config;
        the result imported by the model's label names, ordered by value."""
        model = self._selected(("segmentation", "detection"), self.segmentation_model)
        params = self.params_from_config("infer", model)
        result_file, params = self._infer(model, self.current_sample["id"], params)
        try:
            labels = params.get("label_names") if params and params.get("label_names") else self.models[model].get("labels")
            if labels and isinstance(labels, dict):
                labels = [k for k, _ in sorted(labels.items(), key=lambda item: item[1])]
            self.update_segmentation_mask(result_file, labels)
        finally:
            if result_file and os.path.exists(result_file):
                os.unlink(result_file)

    def click(self, point, label: str | None = None, negative: bool = False) -> None:
        """A point placed on the volume (IJK, as ``getControlPointXYZ`` rounds it) -> ``onDeepGrowPointListNodeModified``
        -> ``onClickDeepgrow`` (lines 902-923, 1591-1724). The point lists show the current segment's points.
        ``point`` None: the section's *Update* button (``onUpdateDeepgrow``, line 1588), the points as they are.

        DeepEdit (``deepedit_multi_label``: a ``deepedit`` model with labels, lines 681-683) sends every /info label's
        foreground points by name and ``label``; a deepgrow model ``foreground``/``background`` of the segment. A
        placed SAM2 ROI goes with either as ``roi`` (:meth:`roi_points_xyz`)."""
        if label:
            self.select_label(label)
        model = self._selected(("deepgrow", "deepedit"), self.deepgrow_model)
        if not model:
            raise RuntimeError("Please select a model")
        label = self.current_label or (self.label_items() or [""])[0]
        segment = self._segment(label)
        if segment is None:
            raise RuntimeError("Please add the required label to run interactive model")
        foreground = json.loads(segment.tags.get(FOREGROUND_TAG, "[]"))
        background = json.loads(segment.tags.get(BACKGROUND_TAG, "[]"))
        if point is not None:
            (background if negative else foreground).append([int(round(c)) for c in point])
        segment.tags[FOREGROUND_TAG], segment.tags[BACKGROUND_TAG] = json.dumps(foreground), json.dumps(background)
        if self.models[model].get("dimension", 3) == 2:
            raise NotImplementedError("2-D models are not transcribed")
        selected_roi = self.roi_points_xyz(self.sam2_roi)
        m = self.models[model]
        if m.get("type") == "deepedit" and len(m.get("labels")) > 0:
            params = {}
            for name in self.info.get("labels", []):
                other = self._segment(name)
                params[name] = json.loads(other.tags.get(FOREGROUND_TAG, "[]")) if other else []
            labels = None
        else:
            params = {"label": label, "foreground": foreground, "background": background}
            labels = [label]
        params["label"] = label
        params.update(self.params_from_config("infer", model))
        if selected_roi:
            params["roi"] = selected_roi
        if not params.get("reset_state") and self.reset_label_state:
            params["reset_state"] = True
            self.reset_label_state = False
        result_file, params = self._infer(model, self.current_sample["id"], params)
        if labels is None:
            labels = params.get("label_names") if params and params.get("label_names") else self.models[model].get("labels")
            if labels and isinstance(labels, dict):
                labels = [k for k, _ in sorted(labels.items(), key=lambda item: item[1])]
        self.update_segmentation_mask(result_file, labels, freeze=label if self.freeze else None)

    # -- ROI -------------------------------------------------------------------------------------------
    def place_roi(self, ijk_lo, ijk_hi, which: str = "sam2") -> None:
        """An ROI drawn over the voxels ``ijk_lo``..``ijk_hi`` (inclusive): Slicer's ROI is an axis-aligned box in
        RAS, so this is the RAS bounding box of those voxels' centres (its extent, not a voxel grid)."""
        corners = np.array([[(ijk_lo, ijk_hi)[b][a] for a, b in enumerate(bits)]
                            for bits in np.ndindex(2, 2, 2)], dtype=np.float64)
        ras = nib.affines.apply_affine(self.volume.affine, corners)
        lo, hi = ras.min(0), ras.max(0)
        roi = ((lo + hi) / 2.0, hi - lo)
        if which == "sam2":
            self.sam2_roi = roi
        else:
            self.scribbles_roi = roi

    def roi_points_xyz(self, roi) -> list:
        """``getROIPointsXYZ`` (lines 2053-2080): the RAS corners ``centre -/+ size / 2`` through the volume's
        RAS-to-IJK matrix, each coordinate ``round``-ed (Python's), interleaved ``[i(min), i(max), j(min), j(max),
        k(min), k(max)]`` where min/max are the RAS corners (an LPS volume's i and j come out high-low). No placed
        ROI: ``[]``."""
        if roi is None:
            return []
        centre, size = roi
        roi_points_ras = [(x - s / 2, x + s / 2) for x, s in zip(centre, size)]
        roi_points_ras = [item for sublist in roi_points_ras for item in sublist]
        min_points_ras = [roi_points_ras[0], roi_points_ras[2], roi_points_ras[4], 1.0]
        max_points_ras = [roi_points_ras[1], roi_points_ras[3], roi_points_ras[5], 1.0]
        ras_to_ijk = np.linalg.inv(self.volume.affine)
        min_points_ijk = [round(float(i)) for i in ras_to_ijk @ np.asarray(min_points_ras)]
        max_points_ijk = [round(float(i)) for i in ras_to_ijk @ np.asarray(max_points_ras)]
        return [val for pair in zip(min_points_ijk[0:3], max_points_ijk[0:3]) for val in pair]

    # -- scribbles -----------------------------------------------------------------------------------
    def ensure_scribbles_layers(self) -> None:
        """``ensureScribblesLayersPresent`` (lines 1948-1960): ``background_scribbles`` then ``foreground_scribbles``
        added at the end of the node, unless a segment named with "scribbles" is there already."""
        if self.segments is None or any("scribbles" in s.name for s in self.segments):
            return
        for name in ("background_scribbles", "foreground_scribbles"):
            self.segments.append(Segment(name, np.zeros(self.volume.shape[:3], bool)))

    def scribble(self, region: np.ndarray, foreground: bool = True, erase: bool = False) -> None:
        """Paint (or Erase) in the Scribbles section (``onPaintScribbles``/``onEraseScribbles`` ->
        ``updateScribToolLayerFromMode``, lines 2143-2208): the layers made if missing, the editor set to
        ``OverwriteNone`` (the strokes lie over the segments, which keep their voxels)."""
        self.ensure_scribbles_layers()
        segment = self._segment("foreground_scribbles" if foreground else "background_scribbles")
        segment.mask = segment.mask & ~region if erase else segment.mask | region

    def scribble_label_items(self) -> list[str]:
        """``scribLabelComboBox`` (lines 574-595): the node's segments but background and scribbles."""
        if self.segments is not None:
            return [s.name for s in self.segments if s.name not in SKIPPED_ON_SAVE]
        return [label for label in self.info.get("labels", []) if label != "background"]

    def update_scribbles(self, label: str | None = None) -> None:
        """``onUpdateScribbles`` (lines 1976-2051): *all* the node's segments exported as a labelmap (segment ``n``
        of the node is value ``n + 1``, a later one over an earlier one) and saved with the File Extension;
        ``label_info`` ``[{"name", "id": n + 1}]``; the Scribbles ROI as ``roi`` (``[]`` when none is placed); the
        scribbles method's config and ``selected_label_name`` (the Scribbles section's label); the labelmap
        uploaded with ``/infer/<scribbles method>``; the result's value 1 replaces that segment."""
        if label:
            self.scribbles_label = label
        method = self._selected(("scribbles",), self.scribbles_model)
        ids = [s.name for s in self.segments]
        labelmap = export_labelmap(self.segments, ids)
        label_info = [{"name": s.name, "id": idx + 1} for idx, s in enumerate(self.segments)]
        scribbles_in = tempfile.NamedTemporaryFile(suffix=self.file_ext, dir=self.tmpdir).name
        result_file = None
        try:
            write_labelmap(scribbles_in, labelmap, self.volume.affine)
            selected_roi = self.roi_points_xyz(self.scribbles_roi)
            params = self.params_from_config("infer", method)
            params.update({"roi": selected_roi})
            params.update({"label_info": label_info})
            items = self.scribble_label_items()
            selected_label_name = self.scribbles_label if self.scribbles_label in items else items[0]
            if self._segment(selected_label_name) is None:
                raise AttributeError("'NoneType' object has no attribute 'GetName'")
            params.update({"selected_label_name": selected_label_name})
            self.scribbles_sent = labelmap
            result_file, params = self._infer(method, self.current_sample["id"], params, scribbles_in)
            self.update_segmentation_mask(result_file, [selected_label_name])
        finally:
            for path in (scribbles_in, result_file):
                if path and os.path.exists(path):
                    os.unlink(path)

    def update_segmentation_mask(self, in_file: str | None, labels, freeze=None) -> bool:
        """``updateSegmentationMask`` (lines 1768-1891) for a 3-D labelmap (``sliceIndex`` None). No file: an empty
        segment for each label not there yet. A file: ``background`` left out of the names; without ``freeze``
        value ``i`` replaces segment ``labels[i-1]``; with it, only that label's segment is replaced by the
        labelmap's ``i``-th present value (the slow path)."""
        if in_file and not os.path.exists(in_file):
            return False
        if self.segments is None:
            raise AttributeError("'NoneType' object has no attribute 'GetSegmentation'")
        if in_file is None:
            for label in labels:
                if not self._segment(label):
                    self.segments.append(Segment(label, np.zeros(self.volume.shape[:3], bool)))
            return True
        if in_file.endswith(".json") or (in_file.endswith(".seg.nrrd") and self.file_ext == ".seg.nrrd"):
            raise NotImplementedError("loading a .seg.nrrd or .json result is not transcribed")
        labels = [label for label in labels if label != "background"]
        data = self._read_on_volume_grid(in_file)
        if not freeze:  # ImportLabelmapToSegmentationNode(labelmap, node, labels)
            for value, label in enumerate(labels, 1):
                segment = self._segment(label)
                if segment is None:
                    segment = Segment(label, np.zeros(data.shape, bool))
                    self.segments.append(segment)
                segment.mask = data == value
            return True
        freeze = [freeze] if isinstance(freeze, str) else freeze
        for i, value in enumerate(v for v in np.unique(data) if v):
            label = labels[i] if i < len(labels) else f"unknown {i}"
            segment = self._segment(label)
            if segment is not None and label in freeze:
                segment.mask = data == value
        return True

    def _read_on_volume_grid(self, path: str) -> np.ndarray:
        """``sitk.ReadImage`` + ``PushVolumeToSlicer``: the labelmap's voxels in IJK order, on the volume's grid."""
        import SimpleITK as sitk

        image = sitk.ReadImage(path)
        data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
        affine[:3, 3] = image.GetOrigin()
        affine[:3] = _LPS @ affine[:3]
        if data.shape != self.volume.shape[:3] or not np.allclose(affine, self.volume.affine, atol=1e-3):
            raise AssertionError(f"{os.path.basename(path)} is not on the volume's grid (Slicer would resample it)")
        return data

    def paint(self, label: str, region: np.ndarray) -> None:
        """Segment Editor, Paint: ``region`` added to the segment. Its default "overwrite all segments" takes it
        out of the others, unless Allow Overlapping Segmentations set ``OverwriteNone`` (``initSample``, 1359-1362)."""
        segment = self._segment(label)
        segment.mask = segment.mask | region
        if not self.allow_overlap:
            for other in self.segments:
                if other is not segment:
                    other.mask = other.mask & ~region

    def erase(self, label: str, region: np.ndarray) -> None:
        """Segment Editor, Erase: ``region`` taken out of the segment."""
        segment = self._segment(label)
        segment.mask = segment.mask & ~region

    def save_label(self) -> dict:
        """``onSaveLabel`` (lines 1452-1539): every segment but background and scribbles, each with ``idx`` = its
        position among *all* the node's segments + 1, exported by ``ExportSegmentsToLabelmapNode`` (values 1..n in
        that order); the whole node saved as a ``.seg.nrrd`` when the extension is ``.seg.nrrd`` and overlapping
        segments are allowed, else the labelmap with the extension; ``PUT /datastore/label`` (tag "", the server's
        default) with ``{"label_info": ...}``; then /info again. The file sent is kept in ``self.saved_file``."""
        model = self._selected(("segmentation", "detection"), self.segmentation_model)
        if model and self.models[model]["type"] == "detection":
            raise NotImplementedError("detection models are not transcribed")
        ids, label_info = [], []
        for idx, segment in enumerate(self.segments):
            if segment.name in SKIPPED_ON_SAVE:
                continue
            ids.append(segment.name)
            label_info.append({"name": segment.name, "idx": idx + 1})
        labelmap = export_labelmap(self.segments, ids)
        label_in = tempfile.NamedTemporaryFile(suffix=self.file_ext, dir=self.tmpdir).name
        if self.allow_overlap and self.file_ext == ".seg.nrrd":
            write_seg_nrrd(label_in, self.segments, self.volume.affine)
        else:
            write_labelmap(label_in, labelmap, self.volume.affine)
        self.saved_file, self.saved_label_info = label_in, label_info
        result = self._client().save_label(self.current_sample["id"], label_in, params={"label_info": label_info})
        self.fetch_info()
        return result

    def train(self) -> dict:
        """``onTraining`` (lines 1160-1200): ``POST /train/<model>`` with the trainer's config; the trainer is the
        one chosen, else the first of /info's trainers."""
        trainers = list(self.info.get("trainers", {}))
        model = self.trainer if self.trainer in trainers else (trainers[0] if trainers else "")
        if not model:
            raise RuntimeError("No Model selected is to run the training")
        return self._client().train_start(model, self.params_from_config("train", model))
