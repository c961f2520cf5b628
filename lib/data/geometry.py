"""Implicit-shape toolkit for the phantom generator: grid boxes, signed distances, curves, painting.

Shapes are signed distances in millimetres evaluated at voxel centres in patient-frame coordinates
(x towards the patient's right, y anterior, z superior: the RAS axes). Working in millimetres keeps the
anatomy independent of spacing and field of view. Every shape is evaluated only inside its own bounding
box, on broadcast 1-D coordinate axes, which keeps a whole abdomen under a second on two cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FAR = np.float32(1.0e4)  # "far outside" distance for voxels a shape never reached


class Grid:
    """Voxel centres of an axis-aligned grid stored in RAS voxel order (patient-frame mm)."""

    def __init__(self, origin, spacing, shape):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.shape = tuple(int(n) for n in shape)
        self.axes = [(self.origin[a] + self.spacing[a] * np.arange(self.shape[a])).astype(np.float32) for a in range(3)]

    def box(self, lo, hi) -> "Box | None":
        """The voxels whose centres lie in the mm range [lo, hi] (None when it misses the grid)."""
        slices = []
        for a in range(3):
            i0 = max(0, math.ceil((lo[a] - self.origin[a]) / self.spacing[a]))
            i1 = min(self.shape[a], math.floor((hi[a] - self.origin[a]) / self.spacing[a]) + 1)
            if i0 >= i1:
                return None
            slices.append(slice(i0, i1))
        return Box(self, tuple(slices))

    def full(self) -> "Box":
        return Box(self, tuple(slice(0, n) for n in self.shape))


class Box:
    """A rectangular block of the grid with its broadcastable coordinate axes X (n,1,1), Y (1,n,1), Z (1,1,n)."""

    def __init__(self, grid: Grid, slices):
        self.grid = grid
        self.slices = tuple(slices)
        self.X = grid.axes[0][self.slices[0]][:, None, None]
        self.Y = grid.axes[1][self.slices[1]][None, :, None]
        self.Z = grid.axes[2][self.slices[2]][None, None, :]
        self.shape = (self.X.shape[0], self.Y.shape[1], self.Z.shape[2])

    def local(self, lo, hi):
        """Slices (relative to this box) of the sub-block within the mm range [lo, hi], or None."""
        out = []
        for a, ax in enumerate((self.X.ravel(), self.Y.ravel(), self.Z.ravel())):
            i0 = int(np.searchsorted(ax, lo[a], side="left"))
            i1 = int(np.searchsorted(ax, hi[a], side="right"))
            if i0 >= i1:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def sub(self, local) -> "Box":
        return Box(self.grid, tuple(slice(s.start + l.start, s.start + l.stop) for s, l in zip(self.slices, local)))


def bounds(points, pad) -> tuple[np.ndarray, np.ndarray]:
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    return p.min(0) - pad, p.max(0) + pad


# ---- signed distances ---------------------------------------------------------------------------------------
def ellipsoid_sd(box: Box, centre, semi, rot=None):
    """Approximate signed distance to an ellipsoid (exact on the axes; good near the surface).

    ``rot`` is a 3x3 matrix whose columns are the ellipsoid's axes in patient coordinates."""
    c = np.asarray(centre, dtype=np.float32)
    dx, dy, dz = box.X - c[0], box.Y - c[1], box.Z - c[2]
    if rot is None:
        q = (dx, dy, dz)
    else:
        r = np.asarray(rot, dtype=np.float32)
        q = tuple(r[0, k] * dx + r[1, k] * dy + r[2, k] * dz for k in range(3))
    a = [np.float32(s) for s in semi]
    k0 = np.sqrt((q[0] / a[0]) ** 2 + (q[1] / a[1]) ** 2 + (q[2] / a[2]) ** 2)
    k1 = np.sqrt((q[0] / a[0] ** 2) ** 2 + (q[1] / a[1] ** 2) ** 2 + (q[2] / a[2] ** 2) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))).astype(np.float32)


def ellipse2d_sd(box: Box, cx, cy, ax, ay):
    """Signed distance (approx.) to an infinite elliptic cylinder along z; shape (nx, ny, 1)."""
    qx, qy = (box.X - np.float32(cx)) / np.float32(ax), (box.Y - np.float32(cy)) / np.float32(ay)
    k0 = np.sqrt(qx * qx + qy * qy)
    k1 = np.sqrt((qx / np.float32(ax)) ** 2 + (qy / np.float32(ay)) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, np.float32(1e-6))).astype(np.float32)


def smin(a, b, k):
    """Smooth union of two signed distances (polynomial smooth minimum, blend width k mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def rotation(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """Rotation matrix (radians) about z (yaw), then y (pitch), then x (roll)."""
    cz, sz, cy, sy, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


# ---- curves and tubes -----------------------------------------------------------------------------------------
def spline(control, step: float) -> np.ndarray:
    """Uniform Catmull-Rom curve through the control points, resampled every ``step`` mm of arc length."""
    p = np.asarray(control, dtype=np.float64)
    if len(p) < 2:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    dense = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        t = np.linspace(0.0, 1.0, 24, endpoint=False)[:, None]
        dense.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                            + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    dense.append(p[-1:])
    d = np.vstack(dense)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(d, axis=0), axis=1))])
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    si = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(si, s, d[:, k]) for k in range(3)], axis=1)


def arclength(pts) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])


@dataclass
class TubeField:
    box: Box
    sd: np.ndarray  # signed distance to the tube surface (FAR where no segment reached)
    s: np.ndarray | None  # arc length (mm) of the nearest centreline point (when asked for)


def tube(grid: Grid, pts, radii, margin: float = 6.0, box: Box | None = None, want_s: bool = False) -> TubeField | None:
    """Signed distance to a tube of varying radius around a polyline (union of rounded cones).

    Each segment is evaluated only in its own bounding block, so long thin tubes stay cheap."""
    pts = np.asarray(pts, dtype=np.float64)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
    if box is None:
        lo, hi = bounds(pts, radii.max() + margin)
        box = grid.box(lo, hi)
        if box is None:
            return None
    sd = np.full(box.shape, FAR, dtype=np.float32)
    sarc = np.zeros(box.shape, dtype=np.float32) if want_s else None
    s = arclength(pts)
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        pad = max(radii[i], radii[i + 1]) + margin
        loc = box.local(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
        if loc is None:
            continue
        X, Y, Z = box.X[loc[0]], box.Y[:, loc[1]], box.Z[:, :, loc[2]]
        ba = (b - a).astype(np.float32)
        bb = max(float(ba @ ba), 1e-9)
        px, py, pz = X - np.float32(a[0]), Y - np.float32(a[1]), Z - np.float32(a[2])
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / np.float32(bb), 0.0, 1.0)
        d = np.sqrt((px - ba[0] * h) ** 2 + (py - ba[1] * h) ** 2 + (pz - ba[2] * h) ** 2)
        d -= np.float32(radii[i]) + np.float32(radii[i + 1] - radii[i]) * h
        cur = sd[loc]
        better = d < cur
        cur[better] = d[better]
        if want_s:
            sarc[loc][better] = (np.float32(s[i]) + np.float32(s[i + 1] - s[i]) * h)[better]
    return TubeField(box, sd, sarc)


# ---- smooth random fields in world coordinates -----------------------------------------------------------------
class FourierNoise:
    """A smooth random field: a few plane waves with random directions, wavelengths and phases.

    Defined in millimetres, so a shape perturbed by it is the same whatever the grid."""

    def __init__(self, rng: np.random.Generator, n: int, wavelength: tuple[float, float], amplitude: float):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        k = 2 * np.pi / rng.uniform(*wavelength, size=n)
        self.k = (d * k[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
        self.amp = np.float32(amplitude * math.sqrt(2.0 / n))  # unit-ish standard deviation times amplitude

    def __call__(self, box: Box):
        out = np.zeros(box.shape, dtype=np.float32)
        for k, ph in zip(self.k, self.phase):
            out += np.sin(k[0] * box.X + k[1] * box.Y + k[2] * box.Z + ph)
        return out * self.amp


# ---- painting --------------------------------------------------------------------------------------------------
ORGANS = {"spleen": 1}  # organs tracked beside the pancreas label (the spleen task's label)


class Canvas:
    """The HU field, the pancreas label and the organ map being built; later paint wins, with a soft edge one
    voxel wide. ``organ`` holds the :data:`ORGANS` code of the tissue that finally owns each voxel."""

    def __init__(self, grid: Grid, background: float, texture: np.ndarray):
        self.grid = grid
        self.hu = np.full(grid.shape, background, dtype=np.float32)
        self.label = np.zeros(grid.shape, dtype=np.uint8)
        self.organ = np.zeros(grid.shape, dtype=np.uint8)
        self.texture = texture  # smooth unit-variance noise on the grid, shared by organs
        self.ramp = np.float32(max(float(min(grid.spacing[0], grid.spacing[1])), 0.5))
        self.exterior: np.ndarray | None = None  # room air around the body, set by the painter

    def tex(self, box: Box):
        return self.texture[box.slices]

    def paint(self, box: Box | None, sd, value, label: int | None = 0, ramp: float | None = None, organ: str | None = None):
        """Blend ``value`` (scalar or box-shaped array) where ``sd`` < 0; set ``label`` there (None keeps it, and
        keeps the organ map); the organ map becomes ``organ``'s code there (0 for any other tissue)."""
        if box is None:
            return
        w = self.ramp if ramp is None else np.float32(ramp)
        alpha = np.clip(np.float32(0.5) - sd / w, 0.0, 1.0)
        if alpha.shape != box.shape:
            alpha = np.broadcast_to(alpha, box.shape)
        h = self.hu[box.slices]
        h += alpha * (value - h)
        if label is not None:
            inside = sd < 0
            if inside.shape != box.shape:
                inside = np.broadcast_to(inside, box.shape)
            self.label[box.slices][inside] = label
            self.organ[box.slices][inside] = ORGANS[organ] if organ else 0
