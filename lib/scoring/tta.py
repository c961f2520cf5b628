"""Test-time-augmentation (TTA) uncertainty of one CT volume under a DiNTS network, on the model grid.

DiNTS has no dropout, so the model's doubt is probed by running it several times on slightly different
views of the same volume and measuring how unsure the mean of their class probabilities is (the binary entropy
of the mean; how much the samples disagree is recorded beside it as a diagnostic, and is not part of the score).

Cost is bounded on a CPU:

1. **Localise** (one pass): the network runs over the body's bounding box (air around the patient is
   never fed to it) with non-overlapping windows, constant blending.
   The box is one window (rounded up to a multiple of 32 voxels) up to ``localise_max_voxels``.
2. **Region of interest**: the bounding box of everything that pass labelled pancreas or tumour, grown by
   ``margin_mm`` (at least ``min_roi`` voxels, at most ``max_roi``). An image where nothing was found is
   scored around the centre of the body (and flagged ``no_pancreas_found``: such an image is maximally
   informative to label).
3. **TTA samples** (``samples``, the first is the plain view): each one is the ROI translated by a random
   whole number of voxels (<= ``max_shift`` per axis; exactly invertible, unlike resampling), with a small
   random intensity scale and shift on the 0..1 image and light Gaussian noise. Each sample is ONE network
   call on a window rounded up to a multiple of 32 voxels. Flips are off by default: the shipped weights
   are trained without flips because left/right and up/down anatomy is a cue, so a flipped view is out of
   distribution rather than a plausible re-view (``flips=True`` adds them for networks trained with flips).

Scores (all in [0, 1]; higher = more worth labelling):

* ``pancreas``: mean binary entropy (bits) of the mean foreground probability (pancreas + tumour) over the
  region the samples call foreground, dilated by ``dilate`` voxels: the boundary/extent doubt;
* ``tumor``: mean binary entropy of the mean tumour probability over the voxels where any sample gives the
  tumour a probability >= ``tumor_threshold`` (dilated); 0 when no sample sees any tumour-like voxel;
* ``disagreement``: 1 - mean pairwise Dice of the samples' foreground masks (diagnostic);
* ``score`` = (``pancreas`` + ``tumor_weight`` x ``tumor``) / (1 + ``tumor_weight``); 1 when nothing was found.
* ``bald``: the samples as a committee, the mutual information between the prediction and the committee member
  (BALD): per voxel H(mean p) - mean_t H(p_t), H the entropy over all C classes in bits, averaged over the same
  foreground region as ``pancreas`` and divided by log2(C) (so in [0, 1]); 0 when every sample gives the same
  probabilities, larger the more they disagree; 1 when nothing was found. ``bald_sum`` is the per-voxel
  mutual information (bits) summed over that region.

Besides the scores: ``pancreas_voxels`` / ``tumor_voxels``, the voxels (on the model grid, inside the ROI) that
the mean of the samples labels organ (class 1) / lesion (classes >= 2): what the ``random_fg`` and ``clasp_pe``
strategies use to tell images predicted to hold a tumour.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from lib.metrics import dice
from lib.runtime.fast_path import ceil_to_multiple, mask_box
from lib.transforms.scores import foreground

SCORE_VERSION = 2  # 2: bald, bald_sum, pancreas_voxels and argmax-of-mean tumor_voxels


@dataclass(frozen=True)
class TTAOptions:
    samples: int = 4  # network calls on the ROI, the first being the plain view
    max_shift: int = 4  # voxels, per axis
    intensity_scale: float = 0.05  # x (1 +- u), on the 0..1 image
    intensity_shift: float = 0.03  # + u
    noise_std: float = 0.01
    flips: bool = False
    margin_mm: float = 16.0
    min_roi: int = 64
    max_roi: int = 128
    localise_roi: int = 128  # window edge when the body box is too big for one window
    localise_max_voxels: int = 6_000_000  # the whole body box in ONE window (rounded up to 32) up to this size
    body_threshold: float = 0.05  # about -73 HU on the 0..1 scaled window -87..199
    tumor_threshold: float = 0.1
    tumor_weight: float = 1.0
    dilate: int = 2
    seed: int = 0

    def key(self) -> dict:
        """What makes two scores comparable (with the model checksum and the spacing)."""
        return {"version": SCORE_VERSION, **asdict(self)}


def _fit_box(center: np.ndarray, size: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A box of ``size`` centred on ``center`` moved inside [0, shape) where it fits (clipped where not)."""
    size = np.minimum(size, shape)
    lo = np.round(center - size / 2.0).astype(int)
    lo = np.clip(lo, 0, shape - size)
    return lo, lo + size


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def _predict(net: Callable, image: torch.Tensor, roi: int, mode: str = "constant", max_voxels: int = 0) -> torch.Tensor:
    """Softmax (C, x, y, z) of ``image`` (1, x, y, z), no overlap: one window of the image's size rounded up to
    a multiple of 32 if that holds at most ``max_voxels``, else windows of at most ``roi`` per axis."""
    whole = [ceil_to_multiple(s) for s in image.shape[1:]]
    size = whole if int(np.prod(whole)) <= max_voxels else [min(w, roi) for w in whole]
    with torch.no_grad():
        logits = sliding_window_inference(image[None], size, 1, net, overlap=0.0, mode=mode, padding_mode="constant")
    return torch.softmax(logits[0].float(), dim=0)


def localise(net: Callable, image: torch.Tensor, spacing, opts: TTAOptions) -> tuple[np.ndarray, np.ndarray, bool, dict]:
    """ROI [lo, hi) on the model grid around what the network calls pancreas/tumour; ``found`` flag."""
    shape = np.asarray(image.shape[1:])
    spacing = np.asarray(spacing, dtype=float)
    body = mask_box(image[0] > opts.body_threshold)
    if body is None:
        body = (np.zeros(3, int), shape)
    blo, bhi = body
    crop = image[:, blo[0]:bhi[0], blo[1]:bhi[1], blo[2]:bhi[2]]
    probs = _predict(net, crop, opts.localise_roi, max_voxels=opts.localise_max_voxels)
    fg = foreground(probs)
    box = mask_box(fg)
    found = box is not None
    margin = np.ceil(opts.margin_mm / spacing).astype(int)
    if found:
        lo, hi = box[0] + blo - margin, box[1] + blo + margin
        center, size = (lo + hi) / 2.0, hi - lo
    else:
        center, size = (blo + bhi) / 2.0, np.zeros(3, int)
    size = np.clip(size, opts.min_roi, opts.max_roi)
    lo, hi = _fit_box(center, size, shape)
    return lo, hi, found, {"body_box": [blo.tolist(), bhi.tolist()], "localise_voxels": int(fg.sum())}


def _augment(crop: torch.Tensor, rng: np.random.Generator, opts: TTAOptions) -> torch.Tensor:
    scale = 1.0 + rng.uniform(-opts.intensity_scale, opts.intensity_scale)
    shift = rng.uniform(-opts.intensity_shift, opts.intensity_shift)
    out = crop * scale + shift
    if opts.noise_std > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))
        out = out + torch.randn(out.shape, generator=gen) * opts.noise_std
    return out


def tta_samples(net: Callable, image: torch.Tensor, lo: np.ndarray, hi: np.ndarray, opts: TTAOptions) -> torch.Tensor:
    """(T, C, *roi) class probabilities of the ROI [lo, hi), each sample aligned back onto the ROI grid."""
    rng = np.random.default_rng(opts.seed)
    s = int(opts.max_shift)
    padded = torch.nn.functional.pad(image, (s, s, s, s, s, s), mode="constant", value=0.0) if s > 0 else image
    size = hi - lo
    roi = max(ceil_to_multiple(int(v)) for v in size)
    out = []
    for t in range(max(1, int(opts.samples))):
        d = np.zeros(3, int) if t == 0 or s == 0 else rng.integers(-s, s + 1, size=3)
        a = lo + s + d
        crop = padded[:, a[0]:a[0] + size[0], a[1]:a[1] + size[1], a[2]:a[2] + size[2]]
        flip_axes: list[int] = []
        if t > 0:
            crop = _augment(crop, rng, opts)
            if opts.flips:
                flip_axes = [ax + 1 for ax in range(3) if rng.random() < 0.5]
        if flip_axes:
            crop = torch.flip(crop, flip_axes)
        probs = _predict(net, crop, roi, max_voxels=1 << 62)
        if flip_axes:
            probs = torch.flip(probs, flip_axes)
        # probs[:, x] describes ROI voxel x + d: move it back, keep the plain view where nothing was seen
        aligned = out[0].clone() if out else probs.clone()
        src = [slice(max(0, -int(k)), int(n) - max(0, int(k))) for k, n in zip(d, size)]
        dst = [slice(max(0, int(k)), int(n) + min(0, int(k))) for k, n in zip(d, size)]
        aligned[:, dst[0], dst[1], dst[2]] = probs[:, src[0], src[1], src[2]]
        out.append(aligned)
    return torch.stack(out)


def mutual_information(probs: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-voxel BALD mutual information (bits) of (T, C, ...) committee probabilities: H(mean_t p_t) - mean_t H(p_t),
    H the entropy over the C classes. 0 where every member gives the same probabilities; at most log2(C).
    One member at a time (no (T, C, ...) temporaries: the ROI may be 128^3)."""
    probs = probs.float()
    mean = probs.mean(0)
    h_mean = -(mean * torch.log2(mean.clamp_min(eps))).sum(0)
    h_each = torch.zeros_like(h_mean)
    for p in probs:
        h_each -= (p * torch.log2(p.clamp_min(eps))).sum(0)
    return (h_mean - h_each / len(probs)).clamp_min(0.0)


def _pairwise_dice(masks: np.ndarray) -> float:
    n = len(masks)
    if n < 2:
        return 1.0
    vals = []
    for i in range(n):
        for j in range(i + 1, n):
            vals.append(dice(masks[i], masks[j], True))  # two empty masks agree: 1.0
    return float(np.mean(vals))


def uncertainty_from_samples(probs: torch.Tensor, opts: TTAOptions) -> dict:
    """Scores from (T, C, x, y, z) TTA probabilities: C = background, the organ (pancreas, spleen) and, where the
    task has them, the lesion classes (tumour) after it. ``pancreas`` is the foreground (organ + lesion) term,
    ``tumor`` the lesion term (0 for a task without one)."""
    mean = probs.mean(0)
    lesion = probs.shape[1] > 2
    labels = probs.argmax(1).numpy()  # (T, x, y, z)
    fg_masks = labels > 0
    region = fg_masks.any(0) | (mean[1:].sum(0) > 0.5).numpy()
    if opts.dilate > 0 and region.any():
        region = ndimage.binary_dilation(region, iterations=int(opts.dilate))
    p_fg = mean[1:].sum(0)
    res: dict = {"region_voxels": int(region.sum())}
    if not region.any():
        res.update(pancreas=1.0, tumor=1.0, score=1.0, disagreement=1.0, no_pancreas_found=True,
                   bald=1.0, bald_sum=0.0, pancreas_voxels=0, tumor_voxels=0, tumor_volume_cv=0.0)
        return res
    reg = torch.from_numpy(region)
    u_p = float(binary_entropy(p_fg)[reg].mean())
    tumour_like = (probs[:, 2:].sum(1).amax(0) >= opts.tumor_threshold).numpy() if lesion else None
    if lesion and tumour_like.any():
        if opts.dilate > 0:
            tumour_like = ndimage.binary_dilation(tumour_like, iterations=1)
        u_t = float(binary_entropy(mean[2:].sum(0))[torch.from_numpy(tumour_like)].mean())
    else:
        u_t = 0.0
    t_counts = (labels >= 2).reshape(len(labels), -1).sum(1).astype(float)
    mi = mutual_information(probs)[reg]
    n_classes = int(probs.shape[1])
    mean_label = mean.argmax(0)
    w = float(opts.tumor_weight) if lesion else 0.0
    res.update(
        pancreas=round(u_p, 6),
        tumor=round(u_t, 6),
        score=round((u_p + w * u_t) / (1.0 + w), 6),
        disagreement=round(1.0 - _pairwise_dice(fg_masks), 6),
        bald=round(float(mi.mean()) / max(1.0, float(np.log2(n_classes))), 6),
        bald_sum=round(float(mi.sum()), 4),
        pancreas_voxels=int((mean_label == 1).sum()),
        tumor_voxels=int((mean_label >= 2).sum()) if lesion else 0,
        tumor_volume_cv=round(float(t_counts.std() / (t_counts.mean() + 1.0)), 6),
        no_pancreas_found=False,
    )
    return res


def score_volume(net: Callable, image: torch.Tensor, spacing, opts: TTAOptions | None = None) -> dict:
    """Uncertainty of ``image`` (1, x, y, z) already on the model grid and scaled to 0..1 (RAS, model spacing)."""
    opts = opts or TTAOptions()
    image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    image = image.float()
    start = time.time()
    was_training = getattr(net, "training", False)
    if hasattr(net, "eval"):
        net.eval()
    try:
        lo, hi, found, stats = localise(net, image, spacing, opts)
        probs = tta_samples(net, image, lo, hi, opts)
    finally:
        if was_training and hasattr(net, "train"):
            net.train()
    res = uncertainty_from_samples(probs, opts)
    if not found:
        # nothing called pancreas at all: the model is lost on this volume, label it early
        res.update(score=1.0, bald=1.0, no_pancreas_found=True)
    res.update(roi=[lo.tolist(), hi.tolist()], samples=int(probs.shape[0]), seconds=round(time.time() - start, 2), **stats)
    return res
