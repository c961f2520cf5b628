"""Synthetic abdominal CT phantoms with pancreas (1) and pancreatic tumour (2) labels.

Real pancreas CT (MSD Task07) cannot be shipped or downloaded here, so the sample datastore, the shipped
CPU weights, the tests and the benchmarks all run on these phantoms. ``make_phantom(seed)`` is a pure
function of the seed (and preset/overrides): the anatomy comes from one random stream, the grid and
storage orientation from another, the noise from a third, so forcing e.g. the spacing or the orientation
leaves the anatomy in world coordinates unchanged.

Pipeline: draw an ``Abdomen`` (lib/data/anatomy.py) -> choose field of view, spacing and orientation ->
paint signed-distance shapes on the RAS grid with one-voxel soft edges -> blur (scanner PSF and slice
profile) -> add mildly correlated Gaussian noise -> round to int16 HU -> flip into the stored orientation.
"""

from __future__ import annotations

import copy
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from lib import atomic
from lib.data.anatomy import Abdomen
from lib.data.geometry import ORGANS, Canvas, Grid

GENERATOR_VERSION = 1
HU_MIN, HU_MAX = -1024, 3071
MAX_VOXELS = 200_000_000  # ~4 GB of float32 working fields; 512 x 512 x 760

_COMMON = {
    "slice_spacing": (2.5, 5.0),  # mm, uniform
    "z_extent": (190.0, 280.0),  # mm covered along z before rounding to whole slices
    "fov_margin": (20.0, 90.0),  # mm added to the body's width to make the in-plane field of view
    "noise_hu": (10.0, 25.0),  # standard deviation of the added noise
    "noise_correlation": 0.7,  # Gaussian sigma (voxels, in-plane) that makes white noise look like CT noise
    "texture_mm": 2.5,  # correlation length of organ texture
    "blur": 0.45,  # Gaussian sigma (voxels) of the partial-volume / PSF blur
    "tumour_probability": 0.72,
    "orientations": (("RAS", 0.5), ("LPS", 0.3), ("LAS", 0.2)),
    "quiet_air": True,  # room air outside the body stays at exactly -1000 HU (noise there only inflates files)
}

PRESETS: dict[str, dict] = {
    # shipped datastore: compact volumes (about 0.5 MB each as .nii.gz)
    # (the coarse end of the training ranges: a noisy body voxel costs ~10 bits in gzip whatever the noise level)
    "sample": {**_COMMON, "inplane_voxels": (150, 170), "inplane_spacing": (2.1, 2.4), "slice_spacing": (4.4, 5.0),
               "slices": (35, 45), "z_extent": (160.0, 195.0), "fov_margin": (15.0, 60.0),
               "description": "compact upper-abdomen CT: 150-170 px in-plane at 2.1-2.4 mm, 35-45 slices of 4.4-5 mm"},
    # bulk training data: the full range of compact grids (under a second per case on one core)
    "train": {**_COMMON, "inplane_voxels": (150, 200), "inplane_spacing": (1.6, 2.4), "slices": (35, 70),
              "description": "training grids: 150-200 px in-plane at 1.6-2.4 mm, 35-70 slices of 2.5-5 mm"},
    # benchmarks: clinical matrix and spacing
    "realistic": {**_COMMON, "inplane_voxels": (512, 512), "inplane_spacing": (0.7, 1.0), "slice_spacing": (1.5, 5.0),
                  "slices": (60, 300), "z_extent": (190.0, 300.0), "fov_margin": (20.0, 120.0),
                  "description": "clinical size: 512x512 at 0.7-1.0 mm, 60-300 slices of 1.5-5 mm"},
}

OVERRIDES = ("spacing", "shape", "tumour", "orientation", "noise_hu")


@dataclass
class Phantom:
    image: np.ndarray  # int16 HU, (X, Y, Z)
    label: np.ndarray  # uint8, 0 background, 1 pancreas, 2 tumour
    affine: np.ndarray  # 4x4 voxel index -> world mm (RAS, nibabel convention)
    info: dict = field(default_factory=dict)
    spleen: np.ndarray | None = None  # bool, the spleen task's label


def task_label(phantom: Phantom, task: str) -> np.ndarray:
    """The phantom's label for a task (:mod:`lib.task`): pancreas 1 / tumour 2, or spleen 1."""
    if task == "pancreas":
        return phantom.label
    if task == "spleen":
        return np.asarray(phantom.spleen, dtype=np.uint8)
    raise ValueError(f"phantoms have no label for task '{task}' (pancreas, spleen)")


def _flip_codes(orientation: str) -> tuple[bool, bool, bool]:
    code = str(orientation).upper()
    allowed = ({"R", "L"}, {"A", "P"}, {"S", "I"})
    if len(code) != 3 or any(c not in a for c, a in zip(code, allowed)):
        raise ValueError(f"orientation must be three letters from R/L, A/P, S/I in that order (e.g. RAS, LPS, LAS), "
                         f"got {orientation!r}")
    return code[0] == "L", code[1] == "P", code[2] == "I"


def _config(preset: str, overrides: dict) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[preset])
    for k, v in overrides.items():
        if k not in OVERRIDES and k not in cfg:
            raise TypeError(f"unknown phantom option {k!r}; allowed: {', '.join(sorted(set(OVERRIDES) | set(cfg)))}")
        cfg[k] = v
    if cfg.get("spacing") is not None:
        sp = tuple(float(v) for v in cfg["spacing"])
        if len(sp) != 3 or min(sp) <= 0:
            raise ValueError(f"spacing must be three positive numbers (mm), got {cfg['spacing']!r}")
        cfg["spacing"] = sp
    if cfg.get("shape") is not None:
        sh = tuple(int(v) for v in cfg["shape"])
        if len(sh) != 3 or min(sh) < 1:
            raise ValueError(f"shape must be three positive integers, got {cfg['shape']!r}")
        cfg["shape"] = sh
    return cfg


def _choose_grid(rng: np.random.Generator, cfg: dict, anat: Abdomen):
    """Spacing, shape, RAS origin (patient frame), FOV centre, noise and orientation; fixed draw order."""
    sxy_draw = rng.uniform(*cfg["inplane_spacing"])
    margin = rng.uniform(*cfg["fov_margin"])
    dz = rng.uniform(*cfg["slice_spacing"])
    extent = rng.uniform(*cfg["z_extent"])
    top_jitter = rng.uniform(-30, 15)
    centre_xy = np.array([rng.uniform(-12, 12), rng.uniform(-25, 10)])
    u_noise, u_orient = rng.random(), rng.random()  # always drawn, so overrides never shift later draws
    world_shift = np.array([rng.uniform(-25, 25), rng.uniform(-40, 40), rng.uniform(-700, -100)])
    nz = cfg["noise_hu"]
    noise = float(nz[0] + u_noise * (nz[1] - nz[0])) if np.ndim(nz) else float(nz)
    if cfg.get("orientation"):
        orientation = str(cfg["orientation"]).upper()
    else:
        names, probs = zip(*cfg["orientations"])
        cum = np.cumsum(probs) / np.sum(probs)
        orientation = names[min(int(np.searchsorted(cum, u_orient, side="right")), len(names) - 1)]
    _flip_codes(orientation)

    hx, ha, hp = anat.half_extent()
    fov = 2 * max(hx, 0.5 * (ha + hp)) + margin
    if cfg.get("spacing") is not None:
        sxy, dz = cfg["spacing"][0], cfg["spacing"][2]
        spacing = cfg["spacing"]
    else:
        lo, hi = cfg["inplane_spacing"]
        if cfg.get("shape") is not None:
            sxy = fov / max(cfg["shape"][0], cfg["shape"][1])
        else:
            n_xy = int(np.clip(round(fov / sxy_draw), *cfg["inplane_voxels"]))
            sxy = float(np.clip(fov / n_xy, lo, hi))
        spacing = (sxy, sxy, dz)
    if cfg.get("shape") is not None:
        shape = cfg["shape"]
    else:
        if cfg.get("spacing") is not None:
            n = max(8, int(round(fov / spacing[0])))
            shape = (n, max(8, int(round(fov / spacing[1]))), max(8, int(round(extent / spacing[2]))))
        else:
            n_z = int(np.clip(round(extent / dz), *cfg["slices"]))
            shape = (n_xy, n_xy, n_z)
    spacing = tuple(float(s) for s in spacing)
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise ValueError(f"phantom grid {tuple(shape)} has more than {MAX_VOXELS:,} voxels; choose a coarser spacing "
                         f"or a smaller shape")
    ext_z = (shape[2] - 1) * spacing[2]
    lm = anat.z_landmarks()
    z_top = lm["dome"] + top_jitter
    lo_top, hi_top = lm["pancreas_high"] + 12, lm["pancreas_low"] - 12 + ext_z
    z_top = float(np.clip(z_top, lo_top, hi_top)) if lo_top <= hi_top else 0.5 * (lm["pancreas_high"] + lm["pancreas_low"] + ext_z)
    origin = np.array([centre_xy[0] - (shape[0] - 1) / 2 * spacing[0],
                       centre_xy[1] - (shape[1] - 1) / 2 * spacing[1],
                       z_top - ext_z])
    return dict(spacing=spacing, shape=tuple(int(s) for s in shape), origin=origin, centre_xy=centre_xy, noise=noise,
                orientation=orientation, world_shift=world_shift)


def _unit_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    n = rng.standard_normal(size=shape, dtype=np.float32)
    if max(sigma) > 0:
        ndimage.gaussian_filter(n, sigma=sigma, output=n, mode="nearest", truncate=3.0)
    sd = float(n[:: max(1, shape[0] // 64), :: max(1, shape[1] // 64), :].std())
    n /= max(sd, 1e-6)
    return n


def make_phantom(seed: int, preset: str = "sample", **overrides) -> Phantom:
    """One synthetic abdominal CT with its pancreas/tumour label; deterministic for (seed, preset, overrides).

    Overrides: ``spacing=(sx, sy, sz)``, ``shape=(nx, ny, nz)``, ``tumour=True/False``, ``orientation="LPS"``,
    ``noise_hu=15`` and any key of ``PRESETS[preset]``."""
    seed = int(seed)
    cfg = _config(preset, overrides)
    anat = Abdomen(np.random.default_rng([seed, 1]), cfg["tumour_probability"], overrides.get("tumour"))
    g = _choose_grid(np.random.default_rng([seed, 2]), cfg, anat)
    noise_rng = np.random.default_rng([seed, 3])

    grid = Grid(g["origin"], g["spacing"], g["shape"])
    sp = np.asarray(g["spacing"])
    tex = _unit_noise(noise_rng, grid.shape, tuple(cfg["texture_mm"] / sp))
    canvas = Canvas(grid, -1000.0, tex)
    extra = anat.paint(canvas)
    del tex, canvas.texture
    hu, label, spleen = canvas.hu, canvas.label, canvas.organ == ORGANS["spleen"]
    del canvas.organ

    b = float(cfg["blur"])
    if b > 0:
        ndimage.gaussian_filter(hu, sigma=(b, b, 0.8 * b), output=hu, mode="nearest", truncate=3.0)
    c = float(cfg["noise_correlation"])
    noise = _unit_noise(noise_rng, grid.shape, (c, c, 0.4 * c))
    hu += noise * np.float32(g["noise"])
    del noise
    if cfg["quiet_air"] and canvas.exterior is not None:
        hu[canvas.exterior] = -1000.0
    # outside the reconstruction circle a scanner writes its padding value
    fx, fy = grid.axes[0] - g["centre_xy"][0], grid.axes[1] - g["centre_xy"][1]
    rad = 0.5 * min(grid.shape[0] * sp[0], grid.shape[1] * sp[1])
    outside = (fx[:, None] ** 2 + fy[None, :] ** 2) > rad ** 2
    hu[outside] = HU_MIN
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    image = np.rint(hu).astype(np.int16)
    del hu

    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = g["origin"] + g["world_shift"]
    flips = _flip_codes(g["orientation"])
    for axis, flip in enumerate(flips):
        if flip:
            image = np.flip(image, axis)
            label = np.flip(label, axis)
            spleen = np.flip(spleen, axis)
            f = np.eye(4)
            f[axis, axis] = -1
            f[axis, 3] = grid.shape[axis] - 1
            affine = affine @ f
    image, label, spleen = np.ascontiguousarray(image), np.ascontiguousarray(label), np.ascontiguousarray(spleen)

    voxel_ml = float(np.prod(sp)) / 1000.0
    n_p, n_t = int((label == 1).sum()), int((label == 2).sum())
    info = {
        "seed": seed,
        "preset": preset,
        "generator_version": GENERATOR_VERSION,
        "spacing": tuple(float(s) for s in sp),
        "shape": tuple(int(s) for s in image.shape),
        "orientation": g["orientation"],
        "has_tumour": bool(anat.has_tumour and n_t > 0),
        "pancreas_voxels": n_p,
        "tumour_voxels": n_t,
        "pancreas_ml": round((n_p + n_t) * voxel_ml, 2),
        "tumour_ml": round(n_t * voxel_ml, 2),
        "spleen_ml": round(int(spleen.sum()) * voxel_ml, 2),
        "noise_hu": round(float(g["noise"]), 2),
        "fov_mm": round(float(image.shape[0] * sp[0]), 1),
        **extra,
    }
    return Phantom(image=image, label=label, affine=affine, info=info, spleen=spleen)


# ---- writing ---------------------------------------------------------------------------------------------------
def write_volume(path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a 3-D array as NIfTI (.nii/.nii.gz) or NRRD (.nrrd) atomically; .nii.gz output is byte-reproducible."""
    path = Path(path)
    name = path.name.lower()
    affine = np.asarray(affine, dtype=np.float64)
    if name.endswith((".nii.gz", ".nii")):
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(data), affine)
        img.header.set_data_dtype(data.dtype)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        raw = img.to_bytes()
        atomic.write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0) if name.endswith(".gz") else raw)
    elif name.endswith(".nrrd"):
        import nrrd

        lps = np.diag([-1.0, -1.0, 1.0])  # NRRD's customary space is LPS
        header = {"type": {np.dtype(np.int16): "short", np.dtype(np.uint8): "unsigned char"}.get(data.dtype, str(data.dtype)),
                  "dimension": 3, "space": "left-posterior-superior", "kinds": ["domain"] * 3, "encoding": "gzip",
                  "space directions": (lps @ affine[:3, :3]).T, "space origin": lps @ affine[:3, 3]}
        atomic.write_with(path, lambda tmp: nrrd.write(tmp, np.asarray(data), header), suffix=".tmp.nrrd")
    else:
        raise ValueError(f"unsupported file type for {path.name!r}: use .nii.gz, .nii or .nrrd")


def save_phantom(phantom: Phantom, image_path, label_path=None, task: str = "pancreas") -> None:
    """Write the image (int16) and optionally the task's label (uint8) with the same affine, each atomically."""
    write_volume(image_path, np.asarray(phantom.image, dtype=np.int16), phantom.affine)
    if label_path is not None:
        write_volume(label_path, np.asarray(task_label(phantom, task), dtype=np.uint8), phantom.affine)
