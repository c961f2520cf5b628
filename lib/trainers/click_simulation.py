"""DeepEdit's click simulation for training an interactive network, on batches of crops.

Per crop: with probability ``no_click_prob`` no clicks at all (the guidance stays zero, so the automatic mode
is trained too); otherwise up to ``max_initial`` clicks per class drawn from the label (deep points more often:
probability proportional to the squared distance to the class border), then up to ``max_rounds`` rounds in
which the current network (no gradient) predicts and one click per class is added in that class's error region
(a missed class voxel, or a background click on a false positive): with probability ``deepest_prob`` where
the robot user (:func:`lib.robot_user.next_click`) and a careful annotator would put it, deep inside the largest
error region, else drawn like the initial clicks. The guidance channels are :func:`lib.clicks.paint_clicks`,
exactly what inference builds from the client's clicks.

A corrective click means "this whole wrong region is the clicked class", but in a crop's Dice + CE loss the
few hundred voxels of that region weigh next to nothing, and a network trained only on it learns to change
little more than the clicked spot. With ``focus_weight`` > 0 the simulation also records, per crop, the error
regions its error clicks were put in (the connected component of prediction != label holding the click) and
:meth:`ClickSimulation.focus_loss` adds ``focus_weight`` x the cross-entropy over those voxels alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lib.clicks import Clicks, DEFAULT_SIGMA_MM, guidance_box, sigma_voxels


def sample_deep_point(mask: np.ndarray, rng: np.random.Generator, spacing: Sequence[float]) -> tuple[float, float, float] | None:
    """A voxel of ``mask`` drawn with probability proportional to its squared distance to the mask's border."""
    if not mask.any():
        return None
    box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in ndimage.find_objects(mask.astype(np.uint8))[0])
    dist = ndimage.distance_transform_edt(mask[box], sampling=spacing) ** 2
    flat = dist.ravel()
    total = flat.sum()
    if total <= 0:
        return None
    i = rng.choice(flat.size, p=flat / total)
    return tuple(float(v + s.start) for v, s in zip(np.unravel_index(i, dist.shape), box))


@dataclass
class ClickSimulation:
    num_classes: int
    spacing: Sequence[float]
    sigma_mm: float = DEFAULT_SIGMA_MM
    no_click_prob: float = 0.3
    max_initial: int = 2
    max_rounds: int = 2
    deepest_prob: float = 0.0
    seed: int = 0
    focus_weight: float = 0.0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.sigma = sigma_voxels(self.sigma_mm, self.spacing)
        self.focus: np.ndarray | None = None  # (B, x, y, z) bool: the error regions of the last batch's error clicks

    def guidance(self, clicks: Clicks, shape) -> torch.Tensor:
        return guidance_box(clicks, self.num_classes, (0, 0, 0), shape, self.sigma)

    def initial(self, label: np.ndarray) -> dict[int, list]:
        points: dict[int, list] = {}
        for c in range(self.num_classes):
            n = int(self.rng.integers(0, self.max_initial + 1))
            mask = label == c
            for _ in range(n if mask.any() else 0):
                p = sample_deep_point(mask, self.rng, self.spacing)
                if p is not None:
                    points.setdefault(c, []).append(p)
        return points

    def error_clicks(self, label: np.ndarray, pred: np.ndarray, points: dict[int, list]) -> list:
        """Add one error click per class to ``points``; returns the clicks' voxel positions."""
        added = []
        if self.deepest_prob > 0 and self.rng.random() < self.deepest_prob:
            from lib.robot_user import next_click

            for c in range(1, self.num_classes):  # the robot's click for each class (it picks the click's label)
                click = next_click(pred, label, c, self.spacing)
                if click is not None:
                    points.setdefault(click[0], []).append(tuple(float(v) for v in click[1]))
                    added.append(click[1])
            return added
        for c in range(self.num_classes):
            missed = (label == c) & (pred != c)  # background: a false positive of some class
            p = sample_deep_point(missed, self.rng, self.spacing)
            if p is not None:
                points.setdefault(c, []).append(p)
                added.append(p)
        return added

    @staticmethod
    def error_region(label: np.ndarray, pred: np.ndarray, points: list) -> np.ndarray:
        """The connected components of ``pred != label`` that hold one of ``points`` (what those clicks should fix)."""
        comps, n = ndimage.label(pred != label)
        out = np.zeros(label.shape, dtype=bool)
        if n == 0 or not points:
            return out
        ids = {int(comps[tuple(int(round(v)) for v in p)]) for p in points}
        ids.discard(0)
        return np.isin(comps, sorted(ids)) if ids else out

    def focus_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``focus_weight`` x the mean cross-entropy over the last batch's clicked error regions (0 without any)."""
        if self.focus_weight <= 0 or self.focus is None or not self.focus.any():
            return logits.sum() * 0.0
        mask = torch.from_numpy(self.focus).to(logits.device)
        ce = F.cross_entropy(logits.float(), labels[:, 0].long(), reduction="none")
        return self.focus_weight * ce[mask].mean()

    def __call__(self, net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, 1, x, y, z) crops and (B, 1, x, y, z) labels -> (B, 1 + C, x, y, z) network inputs."""
        shape = images.shape[2:]
        lab = labels[:, 0].detach().cpu().numpy().astype(np.int64)
        active = [bool(self.rng.random() >= self.no_click_prob) for _ in range(images.shape[0])]
        points = [self.initial(lab[b]) if active[b] else {} for b in range(images.shape[0])]

        def build() -> torch.Tensor:
            g = torch.stack([self.guidance(Clicks({c: tuple(p) for c, p in pts.items()}), shape) for pts in points])
            return torch.cat([images, g.to(images.device, images.dtype)], 1)

        rounds = int(self.rng.integers(0, self.max_rounds + 1)) if any(active) else 0
        focus = np.zeros(lab.shape, dtype=bool) if self.focus_weight > 0 else None
        for _ in range(rounds):
            with torch.no_grad():
                pred = net(build()).argmax(1).cpu().numpy()
            for b in range(images.shape[0]):
                if active[b]:
                    added = self.error_clicks(lab[b], pred[b], points[b])
                    if focus is not None:
                        focus[b] |= self.error_region(lab[b], pred[b], added)
        self.focus = focus
        return build()
