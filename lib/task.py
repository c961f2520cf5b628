"""What is segmented, as data: labels, intensity window, model spacing, orientation, crops.

One :class:`SegmentationTask` per task (``--conf task``). Everything that depends on the task reads it from
here: the infer and train tasks, the search, scoring, metrics, the preprocessing builder
(:mod:`lib.transforms.preprocessing`), benchmarks and data tools. The hardware side (network width, sliding window,
file names) is a :class:`lib.profiles.Profile`.

``pancreas`` is the model-zoo bundle ``pancreas_ct_dints_segmentation`` (MSD Task07: pancreas 1, tumour 2,
HU -87..199, 1 mm on the GPU, class-balanced crops around masks dilated by 48 mm). ``spleen`` is the bundle
``spleen_ct_segmentation`` (MSD Task09: spleen 1, HU -57..164, 1.5 x 1.5 x 2 mm, crops centred on the spleen
and on background one to one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Orientationd's axis letters: voxel axes point towards R, A, S (nibabel's and MONAI's world frame)
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class SegmentationTask:
    name: str
    labels: dict[str, int]  # name -> value; 0 is the background
    hu_window: tuple[float, float]  # ScaleIntensityRanged a_min / a_max, scaled to 0..1 and clipped
    spacing: dict[str, tuple[float, float, float]]  # model spacing (mm) per hardware profile
    crop_size: tuple[int, int, int] = (96, 96, 96)  # training crop (voxels at the model spacing)
    crop_radius_mm: float = 48.0  # crops are centred on class masks dilated by this much (0: on the class itself)
    crop_ratios: tuple[float, ...] = ()  # crop centres per class, background first (default: one each)
    orientation: str = "RAS"
    description: str = ""
    reference: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Output channels of the network: the background and every label."""
        return 1 + len(self.labels)

    @property
    def class_names(self) -> dict[int, str]:
        return {value: name for name, value in sorted(self.labels.items(), key=lambda kv: kv[1])}

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(self.crop_ratios) if self.crop_ratios else (1.0,) * self.num_classes

    def spacing_for(self, profile: str) -> tuple[float, float, float]:
        if profile not in self.spacing:
            raise ValueError(f"task '{self.name}' has no model spacing for profile '{profile}' (has {sorted(self.spacing)})")
        return tuple(float(s) for s in self.spacing[profile])

    def describe(self) -> dict:
        """What ``/info`` shows of the task."""
        return {"name": self.name, "labels": dict(self.labels), "hu_window": list(self.hu_window),
                "spacing": {k: list(v) for k, v in self.spacing.items()}, "description": self.description}


TASKS: dict[str, SegmentationTask] = {
    "pancreas": SegmentationTask(
        name="pancreas",
        labels={"pancreas": 1, "tumor": 2},
        hu_window=(-87.0, 199.0),
        spacing={"cpu": (2.0, 2.0, 2.0), "gpu": (1.0, 1.0, 1.0)},
        crop_radius_mm=48.0,
        description="pancreas and pancreatic tumour in CT",
        reference="model-zoo pancreas_ct_dints_segmentation (MSD Task07)",
    ),
    "spleen": SegmentationTask(
        name="spleen",
        labels={"spleen": 1},
        hu_window=(-57.0, 164.0),
        spacing={"cpu": (2.0, 2.0, 2.0), "gpu": (1.5, 1.5, 2.0)},
        crop_radius_mm=0.0,
        description="spleen in CT",
        reference="model-zoo spleen_ct_segmentation (MSD Task09)",
    ),
}

DEFAULT_TASK = "pancreas"


def get_task(name: str | None) -> SegmentationTask:
    key = (name or DEFAULT_TASK).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task '{name}': choose one of {sorted(TASKS)}")
    return TASKS[key]


def same_label_name(a: str, b: str) -> bool:
    """Label names that mean the same: case, ``_`` and tumour/tumor/cancer (the MSD's word) aside, or one inside the
    other (``pancreatic tumor`` is ``tumor``)."""
    a, b = (str(s).lower().replace("tumour", "tumor").replace("cancer", "tumor").replace("_", " ").strip() for s in (a, b))
    return a == b or a in b or b in a


def same_labels(labels: dict[str, int], task: SegmentationTask) -> bool:
    """``labels`` (name -> value, background left out) are the task's: the same values, each with the same name."""
    names = {v: n for n, v in task.labels.items()}
    return sorted(labels.values()) == sorted(names) and all(same_label_name(names[v], n) for n, v in labels.items())


def studies_label_problem(studies: str | Path, task: SegmentationTask) -> str | None:
    """Why the studies folder's labels are not the task's (its ``dataset.json`` names them, as the sample folders and
    the MSD do), or None. Serving one task on labels of another would train it on the wrong organ."""
    path = Path(str(studies)) / "dataset.json"
    try:
        declared = json.loads(path.read_text(encoding="utf-8")).get("labels")
        labels = {str(n): int(v) for v, n in dict(declared).items() if int(v) != 0}
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # no (readable) declaration: nothing to compare
    if not labels or same_labels(labels, task):
        return None
    return (f"the studies in {path.parent} are labelled {', '.join(f'{n} {v}' for n, v in sorted(labels.items(), key=lambda kv: kv[1]))} "
            f"({path.name}), the served task '{task.name}' is {', '.join(f'{n} {v}' for n, v in task.labels.items())}: "
            f"serve studies labelled for '{task.name}' (the spleen sample: sample-datastore/spleen), or the task they hold")
