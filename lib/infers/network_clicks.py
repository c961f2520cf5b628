"""DeepEdit clicks answered by the network (``--conf click_model network``): one window of the profile's size
centred on each new click, run with the guidance of every click, blended into the start state's class
probabilities (weight 1 at the click, 0 half a window away), and only the input voxels whose model-grid class
changed re-restored into the label (then the boundary refiner, when on, decides the surface voxels among them).
The clicked voxel itself takes its click's label; around it the network decides."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from lib.clicks import Clicks, guidance_box, sigma_voxels, to_model_grid
from lib.profiles import Profile
from lib.runtime.click_cache import ImageBase, union_box
from lib.transforms.boundary_refine import BoundaryRefiner
from lib.transforms.components import bounding_slices
from lib.transforms.restore import input_box, resample_argmax
from lib.transforms.scores import class_argmax


def connected_to(changed: np.ndarray, seed: tuple[slice, ...]) -> np.ndarray:
    """The voxels of ``changed`` (26-connected) in a component that reaches into the ``seed`` box, grown by one
    voxel: what a click may change when its effect has to be connected to it."""
    comps, n = ndimage.label(changed, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros_like(changed)
    ids = np.unique(comps[seed])
    keep = np.isin(comps, ids[ids > 0])
    return ndimage.binary_dilation(keep, structure=np.ones((3, 3, 3), bool)) if keep.any() else keep


def click_weight(roi: Sequence[int], lo: Sequence[int], centre: Sequence[float]) -> torch.Tensor:
    """Blending weight of a click window [lo, lo + roi): a Gaussian (sigma roi/4) around the click, shifted and
    scaled to be 1 at the click and 0 from half a window away."""
    axes = []
    for a in range(3):
        sigma = roi[a] / 4.0
        d = torch.arange(lo[a], lo[a] + roi[a], dtype=torch.float32) - float(centre[a])
        edge = float(np.exp(-0.5 * (roi[a] / 2.0 / sigma) ** 2))
        axes.append(((torch.exp(-0.5 * (d / sigma) ** 2) - edge) / (1.0 - edge)).clamp(min=0.0))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def window_at(centre: Sequence[float], roi: Sequence[int], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """[lo, lo + roi) centred on ``centre``, moved inside the grid (axes shorter than the window start at 0)."""
    lo = np.floor(np.asarray(centre, dtype=np.float64) - np.asarray(roi) / 2.0 + 0.5).astype(int)
    lo = np.clip(lo, 0, np.maximum(np.asarray(shape) - np.asarray(roi), 0))
    return lo, lo + np.asarray(roi)


def crop_padded(volume: torch.Tensor, lo: Sequence[int], hi: Sequence[int]) -> torch.Tensor:
    """volume[:, lo:hi] with zeros where [lo, hi) runs past the grid (a grid smaller than the window)."""
    out = volume.new_zeros((volume.shape[0], *(int(h) - int(l) for l, h in zip(lo, hi))))
    src_hi = [min(int(h), s) for h, s in zip(hi, volume.shape[1:])]
    out[:, : src_hi[0] - lo[0], : src_hi[1] - lo[1], : src_hi[2] - lo[2]] = volume[:, lo[0]:src_hi[0], lo[1]:src_hi[1], lo[2]:src_hi[2]]
    return out


def apply_network_clicks(base: ImageBase, scores: torch.Tensor, clicks_in: Clicks, added: list, labels: list, net,
                     device: str, *, profile: Profile, num_classes: int, sigma_mm: float, click_scope: str,
                     refiner: BoundaryRefiner | None):
    """Run one window per added click (input-grid ``(class, ijk)`` pairs) with the guidance of all clicks,
    blend it into ``scores`` (the start state's copy, changed in place), and re-restore into each of
    ``labels`` (in place) only what can have changed (then refine the boundary there, leaving the clicked
    voxels as clicked)."""
    t0 = time.time()
    roi = [int(r) for r in profile.roi_size]
    shape = base.image.shape[1:]
    c = num_classes
    sigma = sigma_voxels(sigma_mm, profile.spacing)
    clicks = to_model_grid(clicks_in, base.input_affine, base.model_affine, shape)
    new_points = to_model_grid(Clicks.from_pairs(added), base.input_affine, base.model_affine, shape)
    centres = [p for _, pts in sorted(new_points.points.items()) for p in pts]
    boxes = [window_at(p, roi, shape) for p in centres]
    inputs = []
    for lo, hi in boxes:
        img = crop_padded(base.image, lo, hi)
        inputs.append(torch.cat([img, guidance_box(clicks, c, lo, hi, sigma)], 0))
    outs = []
    with torch.no_grad():
        batch = max(1, int(profile.sw_batch_size))
        for i in range(0, len(inputs), batch):
            x = torch.stack(inputs[i:i + batch]).to(device)
            outs.append(torch.softmax(net(x).float(), 1).cpu())
    outs = torch.cat(outs)
    t_net = time.time() - t0
    changed_mask = np.zeros(shape, dtype=bool)
    scores_box = None  # where ``scores`` are written
    reach = np.ceil(3 * sigma).astype(int)  # the click's own neighbourhood is always re-restored
    for (lo, hi), centre, out in zip(boxes, centres, outs):
        hi_c = np.minimum(hi, shape)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi_c))
        valid = tuple(slice(0, int(b - a)) for a, b in zip(lo, hi_c))
        w = click_weight(roi, lo, centre)[valid]
        old = scores[(slice(None), *sl)].float()
        new = w * out[(slice(None), *valid)] + (1.0 - w) * old
        p = np.round(centre).astype(int)
        near = tuple(slice(max(0, int(p[a] - reach[a])), min(int(shape[a]), int(p[a] + reach[a] + 1))) for a in range(3))
        diff = (class_argmax(new) != class_argmax(old)).numpy()
        if click_scope == "connected":  # changes not connected to the click are not its doing: undo them
            local = tuple(slice(n.start - int(a), n.stop - int(a)) for n, a in zip(near, lo))
            keep = connected_to(diff, local)
            keep[local] = True
            new = torch.where(torch.from_numpy(keep)[None], new, old)
            diff &= keep
        scores[(slice(None), *sl)] = new.half()
        scores_box = union_box(scores_box, sl)
        changed_mask[sl] |= diff
        changed_mask[near] = True
    # the clicked voxel itself always takes its click's label (the 8 model voxels its trilinear sample reads)
    for cls, pts in clicks.points.items():
        for p in pts:
            lo = np.clip(np.floor(p).astype(int), 0, np.asarray(shape) - 1)
            sl = tuple(slice(int(a), min(int(a) + 2, int(n))) for a, n in zip(lo, shape))
            scores[(slice(None), *sl)] = 0
            scores[(cls, *sl)] = 1
            scores_box = union_box(scores_box, sl)
            changed_mask[sl] = True
    written = np.zeros(base.input_shape, dtype=bool) if base.hu is not None else None  # only where the refiner works
    voxels, label_box = restore_changed(base, scores, changed_mask, labels, written)
    stats = {"windows": len(boxes), "network_seconds": round(t_net, 3), "restored_voxels": voxels}
    if written is not None and voxels:
        clicked = np.zeros(base.input_shape, dtype=bool)
        for pts in clicks_in.points.values():
            for p in pts:
                clicked[tuple(int(v) for v in p)] = True
        for label in labels:  # the answer's own refinement is the one reported
            stats["refined_voxels"] = refiner.refine(base.hu, label, base.input_affine, editable=written,
                                                          keep=clicked)  # only among the voxels just written
    return stats, scores_box, label_box

def restore_changed(base: ImageBase, scores: torch.Tensor, changed: np.ndarray, labels: list,
                written: np.ndarray | None = None) -> tuple[int, tuple | None]:
    """Write into each of ``labels`` (input grid) the new class (from ``scores``) of every input voxel whose
    nearest model voxel changed (and mark them in ``written`` when given); the voxels written and a box around
    them (None: none)."""
    box = bounding_slices(changed, margin=1)
    if box is None:
        return 0, None
    label_box = None
    grown = ndimage.binary_dilation(changed[box], structure=np.ones((3, 3, 3), bool))
    comps, _ = ndimage.label(grown)
    to_input = np.linalg.inv(base.input_affine) @ base.model_affine  # model index -> input index
    to_model = np.linalg.inv(base.model_affine) @ base.input_affine
    shape_in = np.asarray(base.input_shape)
    mask_full = np.zeros(changed.shape, dtype=bool)
    mask_full[box] = grown
    done = 0
    for sl in ndimage.find_objects(comps):
        lo_m = np.array([b.start + s.start for b, s in zip(box, sl)], dtype=np.float64)
        hi_m = np.array([b.start + s.stop for b, s in zip(box, sl)], dtype=np.float64)
        found = input_box(lo_m, hi_m, to_input, shape_in, base.input_affine)
        if found is None:
            continue
        lo, hi, sub_affine = found
        # the scores of this component's box (+2 voxels: the trilinear support), as their own small grid
        s_lo = np.maximum(lo_m.astype(int) - 2, 0)
        s_hi = np.minimum(hi_m.astype(int) + 2, changed.shape)
        shift = np.eye(4)
        shift[:3, 3] = s_lo
        sub = scores[:, s_lo[0]:s_hi[0], s_lo[1]:s_hi[1], s_lo[2]:s_hi[2]]
        new = resample_argmax(sub, base.model_affine @ shift, sub_affine, tuple(int(v) for v in hi - lo))
        # which of these input voxels fall (nearest) on a changed model voxel
        ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        pts = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
        m = np.rint((to_model @ pts)[:3]).astype(int)
        for a in range(3):
            np.clip(m[a], 0, changed.shape[a] - 1, out=m[a])
        hit = mask_full[m[0], m[1], m[2]].reshape(ii.shape)
        values = new[hit]
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        for label in labels:
            label[region][hit] = values
        if written is not None:
            written[region] |= hit
        label_box = union_box(label_box, region)
        done += int(hit.sum())
    return done, label_box
